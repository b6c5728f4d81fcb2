/**
 * `npm run bench:window-profile -- [--rows 200000] [--window-rows 50000] [--repeat 5]`
 *
 * Where the time of one telemetry window's copy goes, on both V2 storages (native partitions
 * and a TimescaleDB hypertable, both on PostgreSQL 15 with TimescaleDB, V1 on the same server).
 * After a full backfill, one window from the middle of the time range is taken:
 *  - its V1 side alone: the mapped COPY out of V1 into a sink that drops the bytes, and the
 *    same rows unmapped (raw columns);
 *  - its V2 side alone: the window's COPY text, held in memory, copied into V2 telemetry in a
 *    transaction that is rolled back, with the table as it is and with one thing removed at a
 *    time (each foreign key, each index, the stored digest), with all of them removed, and into
 *    a bare table of the same columns (metrics as jsonb, and as text: the JSON parse);
 *  - the same in COPY's binary format.
 * Each figure is the median of `repeat` runs; WAL is what the COPY wrote. The last line is one
 * JSON object.
 */
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { Pool, type PoolClient } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { z } from 'zod';
import { startTimescalePostgres } from '../lambdas/adapters/local/timescale-pg';
import { applyV1Schema, generateV1 } from '../lambdas/adapters/local/v1-generator';
import { runBackfillLocally } from '../lambdas/adapters/local/local-backfill';
import { LocalBackup } from '../lambdas/adapters/local/pg-backup';
import { parseConfig, type MigrationConfig } from '../lambdas/core/config';
import { APPLICATION_NAME, ident } from '../lambdas/core/db';
import { v1Projection, v2Columns } from '../lambdas/core/mapping';
import { runPrepare } from '../lambdas/core/prepare';
import { bindWindow, loadWindow, type WindowRow } from '../lambdas/core/windows';
import { deviceSlices } from '../lambdas/core/sync/window-copy';
import { exitOnError, parseArgs } from '../bin/cli-args';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { log, seconds } from './support';

const flags = z
  .object({
    rows: z.coerce.number().int().min(10_000).default(200_000),
    devices: z.coerce.number().int().min(1).default(1000),
    windowRows: z.coerce.number().int().min(1000).default(50_000),
    repeat: z.coerce.number().int().min(1).max(20).default(5),
    storage: z.enum(['both', 'partitioned', 'timescaledb']).default('both'),
  })
  .strict();

/** CPU time a process has used, in ns (Linux: /proc/<pid>/schedstat), to measure under a busy machine. */
const cpuNs = (pid: number) => Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function copyOut(client: PoolClient, sql: string, keep: boolean): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  await pipeline(
    client.query(copyTo(sql)),
    new Writable({
      write(chunk: Buffer, _enc, done) {
        if (keep) chunks.push(chunk);
        done();
      },
    }),
  );
  return chunks;
}

async function copyIn(client: PoolClient, sql: string, chunks: Buffer[]): Promise<number> {
  const sink = client.query(copyFrom(sql));
  await pipeline(async function* () {
    yield* chunks;
  }, sink);
  return Number(sink.rowCount ?? 0);
}

interface Variant {
  name: string;
  /** DDL run in the transaction before the COPY (rolled back with it). */
  before: string[];
  target?: string;
  binary?: boolean;
  /** The window's rows in key order ("timestamp", id) instead of device by device. */
  keyOrder?: boolean;
}

async function windowSource(
  client: PoolClient,
  config: MigrationConfig,
  window: WindowRow,
  mapped: boolean,
  keyOrder = false,
): Promise<string> {
  await client.query(`SELECT set_config('DateStyle', 'ISO, YMD', true), set_config('TimeZone', 'UTC', true)`);
  // As the backfill reads a window (lambdas/core/sync/window-copy.ts): no JIT, devices as one array.
  await client.query(`SELECT set_config('migration.tenant_id', $1, true), set_config('jit', 'off', true)`, [
    config.tenant.id,
  ]);
  const where = await bindWindow(client, 'telemetry', window, 'v1');
  const columns = mapped
    ? v1Projection('telemetry')
    : `"deviceId", "timestamp", "data", "protocol", "source", "id"`;
  return `SELECT ${columns} FROM device_data WHERE ${where} AND ${deviceSlices(config)}${keyOrder ? ' ORDER BY "timestamp", id' : ''}`;
}

async function profileStorage(
  label: string,
  v1: Pool,
  v2: Pool,
  config: MigrationConfig,
  repeat: number,
): Promise<Record<string, number>> {
  const windows = await v2.query<{ id: string }>(
    `SELECT id FROM migration_control.windows WHERE table_name = 'telemetry' ORDER BY seq`,
  );
  const window = await loadWindow(v2, config, Number(windows.rows[Math.floor(windows.rows.length / 2)].id));
  const reader = await v1.connect();
  const writer = await v2.connect();
  const out: Record<string, number> = {};
  try {
    const readerPid = (await reader.query(`SELECT pg_backend_pid() AS p`)).rows[0].p as number;
    const readTimes = async (mapped: boolean, keep: boolean, binary = false, keyOrder = false) => {
      const times: number[] = [];
      let chunks: Buffer[] = [];
      for (let i = 0; i < repeat; i++) {
        await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
        if (keyOrder) await reader.query(`SET LOCAL work_mem = '64MB'`);
        const sql = await windowSource(reader, config, window, mapped, keyOrder);
        const c0 = cpuNs(readerPid);
        chunks = await copyOut(reader, `COPY (${sql}) TO STDOUT${binary ? ' (FORMAT binary)' : ''}`, keep);
        times.push((cpuNs(readerPid) - c0) / 1e9);
        await reader.query('COMMIT');
      }
      return { s: median(times), chunks };
    };
    const mappedRead = await readTimes(true, true);
    const binaryRead = await readTimes(true, true, true);
    const orderedRead = await readTimes(true, true, false, true);
    const rawRead = await readTimes(false, false);
    const binaryOrderedRead = await readTimes(true, true, true, true);
    // The window's rows leave V2 for good, so that each variant copies them into a table that
    // holds every other window's rows.
    {
      const c = await v2.connect();
      try {
        await c.query('BEGIN');
        const where = await bindWindow(c, 'telemetry', window, 'v2');
        await c.query(`DELETE FROM telemetry WHERE ${where}`);
        await c.query('COMMIT');
      } finally {
        c.release();
      }
      await v2.query('VACUUM ANALYZE telemetry');
    }
    const rows = (await v2.query(`SELECT count(*)::int AS n FROM telemetry WHERE legacy_id IS NOT NULL`))
      .rows[0].n as number;
    out.windowRows = Number(window.expected_rows);
    out.v1MappedReadMs = Math.round(mappedRead.s * 1000);
    out.v1RawReadMs = Math.round(rawRead.s * 1000);
    out.v1BinaryReadMs = Math.round(binaryRead.s * 1000);
    out.v1KeyOrderReadMs = Math.round(orderedRead.s * 1000);
    log(
      `${label}: window ${window.id} (${window.expected_rows} rows, V2 holds ${rows}): V1 backend CPU: mapped read ${out.v1MappedReadMs} ms, raw ${out.v1RawReadMs} ms, binary ${out.v1BinaryReadMs} ms, in key order ${out.v1KeyOrderReadMs} ms`,
    );

    const constraints = (
      await v2.query<{ conname: string; contype: string; def: string }>(
        `SELECT conname, contype, pg_get_constraintdef(oid) AS def FROM pg_constraint
          WHERE conrelid = 'telemetry'::regclass ORDER BY conname`,
      )
    ).rows;
    const fks = constraints.filter((c) => c.contype === 'f');
    const uniques = constraints.filter((c) => c.contype === 'p' || c.contype === 'u');
    const indexes = (
      await v2.query<{ name: string }>(
        `SELECT c.relname AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE i.indrelid = 'telemetry'::regclass
            AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)`,
      )
    ).rows.map((r) => r.name);
    const dropFk = (c: { conname: string }) => `ALTER TABLE telemetry DROP CONSTRAINT ${ident(c.conname)}`;
    const columns = v2Columns('telemetry').map(ident).join(', ');
    const replica = `SET LOCAL session_replication_role = replica`;
    const noDigest = 'ALTER TABLE telemetry DROP COLUMN row_digest';
    const allOff = [
      replica,
      ...uniques.map(dropFk),
      ...indexes.map((i) => `DROP INDEX ${ident(i)}`),
      noDigest,
    ];
    const asBackfill = [replica, ...indexes.map((i) => `DROP INDEX ${ident(i)}`)];
    const variants: Variant[] = [
      { name: 'asIs', before: [] },
      {
        name: 'fkNotValid',
        before: fks.flatMap((c) => [
          dropFk(c),
          `ALTER TABLE telemetry ADD CONSTRAINT ${ident(c.conname)} ${c.def} NOT VALID`,
        ]),
      },
      ...fks.map((c) => ({ name: `no ${c.def.replace(/ REFERENCES.*/, '')}`, before: [dropFk(c)] })),
      { name: 'replicaRole', before: [replica] },
      { name: 'replicaRole, no digest', before: [replica, noDigest] },
      ...uniques.map((c) => ({ name: `replicaRole, no ${c.def}`, before: [replica, dropFk(c)] })),
      ...indexes.map((i) => ({
        name: `replicaRole, no index ${i}`,
        before: [replica, `DROP INDEX ${ident(i)}`],
      })),
      {
        name: 'replicaRole, unique key only',
        before: [
          replica,
          ...uniques.filter((c) => c.contype === 'p').map(dropFk),
          ...indexes.map((i) => `DROP INDEX ${ident(i)}`),
        ],
      },
      { name: 'replicaRole, binary', before: [replica], binary: true },
      { name: 'replicaRole, rows in key order', before: [replica], keyOrder: true },
      {
        name: 'replicaRole, unique key only, rows in key order',
        before: [
          replica,
          ...uniques.filter((c) => c.contype === 'p').map(dropFk),
          ...indexes.map((i) => `DROP INDEX ${ident(i)}`),
        ],
        keyOrder: true,
      },
      // As the backfill copies now: no per-row foreign-key checks, the secondary indexes
      // deferred, binary COPY, rows in key order.
      { name: 'as the backfill copies', before: asBackfill, binary: true, keyOrder: true },
      {
        name: 'as the backfill copies, identity cached 1000',
        before: [...asBackfill, 'ALTER TABLE telemetry ALTER COLUMN id SET CACHE 1000'],
        binary: true,
        keyOrder: true,
      },
      { name: 'nothing (no key, index, digest, foreign key)', before: allOff },
      { name: 'nothing, binary', before: allOff, binary: true },
      {
        name: 'bare table, metrics jsonb',
        before: [
          `CREATE TABLE bare_profile (tenant_id text, device_id text, "timestamp" timestamptz, metrics jsonb, protocol text, source text, quality text, legacy_id bigint)`,
        ],
        target: 'bare_profile',
      },
      {
        name: 'bare table, metrics text',
        before: [
          `CREATE TABLE bare_profile (tenant_id text, device_id text, "timestamp" timestamptz, metrics text, protocol text, source text, quality text, legacy_id bigint)`,
        ],
        target: 'bare_profile',
      },
    ];
    const writerPid = (await writer.query(`SELECT pg_backend_pid() AS p`)).rows[0].p as number;
    for (const v of variants) {
      const times: number[] = [];
      const cpu: number[] = [];
      const wal: number[] = [];
      let refused: string | undefined;
      for (let i = 0; i < repeat; i++) {
        await writer.query('BEGIN');
        await writer.query(
          `SELECT set_config('DateStyle', 'ISO, YMD', true), set_config('TimeZone', 'UTC', true)`,
        );
        try {
          for (const ddl of v.before) await writer.query(ddl);
        } catch (error) {
          await writer.query('ROLLBACK');
          refused = (error as Error).message;
          break;
        }
        const lsn = (await writer.query(`SELECT pg_current_wal_insert_lsn() AS l`)).rows[0].l;
        const c0 = cpuNs(writerPid);
        const t = process.hrtime.bigint();
        const n = await copyIn(
          writer,
          `COPY ${v.target ?? 'telemetry'} (${columns}) FROM STDIN${v.binary ? ' (FORMAT binary)' : ''}`,
          v.binary
            ? v.keyOrder
              ? binaryOrderedRead.chunks
              : binaryRead.chunks
            : v.keyOrder
              ? orderedRead.chunks
              : mappedRead.chunks,
        );
        times.push(seconds(t));
        cpu.push(cpuNs(writerPid) - c0);
        wal.push(
          Number(
            (await writer.query(`SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1) AS d`, [lsn]))
              .rows[0].d,
          ),
        );
        await writer.query('ROLLBACK');
        if (n !== Number(window.expected_rows)) throw new Error(`${v.name}: copied ${n}`);
      }
      if (refused) {
        log(`${label}: ${v.name.padEnd(64)} refused: ${refused}`);
        continue;
      }
      await v2.query('VACUUM telemetry');
      const ms = Math.round(median(times) * 1000);
      const cpuMs = Math.round(median(cpu) / 1e6);
      out[v.name] = cpuMs;
      log(
        `${label}: ${v.name.padEnd(64)} CPU ${String(cpuMs).padStart(5)} ms  wall ${String(ms).padStart(6)} ms  WAL ${(median(wal) / 1e6).toFixed(1)} MB`,
      );
    }
  } finally {
    reader.release();
    writer.release();
  }
  return out;
}

async function main() {
  const args = parseArgs(process.argv.slice(2), flags);
  const pg = await startTimescalePostgres();
  log(`server: ${pg.label}`);
  const backups = mkdtempSync(join(tmpdir(), 'bench-backups-'));
  const pools: Pool[] = [];
  const pool = (db: string) => {
    const p = new Pool({ connectionString: pg.url(db), max: 8, application_name: APPLICATION_NAME });
    p.on('error', () => undefined);
    pools.push(p);
    return p;
  };
  try {
    await pg.createDatabase('v1');
    const v1 = pool('v1');
    await applyV1Schema(v1);
    await generateV1(v1, { devices: args.devices, telemetry: args.rows, seed: 1 });
    await v1.query('VACUUM ANALYZE');
    const result: Record<string, Record<string, number>> = {};
    const storages = args.storage === 'both' ? (['partitioned', 'timescaledb'] as const) : [args.storage];
    for (const storage of storages) {
      await pg.createDatabase(`v2_${storage}`);
      const v2 = pool(`v2_${storage}`);
      const config = parseConfig({
        v1: { url: pg.url('v1') },
        v2: { url: pg.url(`v2_${storage}`) },
        telemetryStorage: storage,
        batch: { telemetryWindowRows: args.windowRows },
      });
      await runPrepare({
        v1,
        v2,
        config,
        actor: 'bench',
        backup: new LocalBackup({
          v1Url: pg.url('v1'),
          v1Schema: 'public',
          mode: 'auto',
          directory: backups,
        }),
      });
      const t = process.hrtime.bigint();
      await runBackfillLocally({ v1, v2, config });
      log(`${storage}: backfill of ${args.rows} rows in ${seconds(t).toFixed(2)} s`);
      await v2.query('VACUUM ANALYZE');
      result[storage] = await profileStorage(storage, v1, v2, config, args.repeat);
    }
    console.log(JSON.stringify(result));
  } finally {
    await Promise.all(pools.map((p) => p.end()));
    await pg.stop();
    rmSync(backups, { recursive: true, force: true });
  }
}

main().catch(exitOnError);
