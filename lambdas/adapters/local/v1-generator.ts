import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Pool, PoolClient } from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { ident, withTransaction } from '../../core/db';
import { SQL_DIR } from '../../core/migrator';

/** Creates the V1 reference schema (sql/v1/schema.sql) in `schema`. */
export async function applyV1Schema(v1: Pool, schema = 'public'): Promise<void> {
  await withTransaction(v1, async (client) => {
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${ident(schema)}`);
    await client.query(`SET LOCAL search_path TO ${ident(schema)}`);
    await client.query(readFileSync(join(SQL_DIR, 'v1', 'schema.sql'), 'utf8'));
  });
}

export interface GenerateOptions {
  devices: number;
  telemetry: number;
  seed: number;
  schema?: string;
  /** Users are derived from devices unless given. */
  users?: number;
  /** Alerts per device on average (default 2). */
  alertsPerDevice?: number;
  /** Called every ~100k telemetry rows. */
  onProgress?: (telemetryRows: number) => void;
  /** The instant "now" for generated times (default 2026-01-01, so output is reproducible). */
  now?: Date;
}

export interface GenerateResult {
  users: number;
  devices: number;
  telemetry: number;
  alerts: number;
  seconds: number;
  telemetryRowsPerSec: number;
}

/** mulberry32: a small, fast, seedable PRNG, so a seed always yields the same data. */
function prng(seed: number): () => number {
  let a = seed >>> 0 || 0x9e3779b9;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Escapes a value for COPY's text format. */
function esc(value: string): string {
  return /[\\\t\n\r]/.test(value)
    ? value.replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n').replace(/\r/g, '\\r')
    : value;
}

const NULL = '\\N';
const DEVICE_TYPES = [
  'temperature_sensor',
  'humidity_sensor',
  'gps_tracker',
  'smart_meter',
  'camera',
  'gateway',
  'capteur_qualité_air',
];
const PROTOCOLS = ['MQTT', 'HTTP', 'COAP', 'LORAWAN'];
const SOURCES = ['gateway-1', 'gateway-2', 'edge', 'api'];
const STATUSES = ['ONLINE', 'OFFLINE', 'MAINTENANCE', 'ERROR'];
const NAMES = ['Ana', 'Björn', '张伟', 'Zoë', 'Ольга', 'محمد', 'Łukasz', "O'Brien", 'Nguyễn', '🙂 emoji'];

async function copyRows(
  client: PoolClient,
  sql: string,
  produce: (push: (line: string) => Promise<void> | undefined) => Promise<void>,
): Promise<void> {
  const stream = client.query(copyFrom(sql));
  const done = new Promise<void>((resolve, reject) => {
    stream.on('finish', resolve);
    stream.on('error', reject);
  });
  let buffer: string[] = [];
  let size = 0;
  const flush = async () => {
    if (buffer.length === 0) return;
    const ok = stream.write(buffer.join(''));
    buffer = [];
    size = 0;
    if (!ok) await new Promise<void>((resolve) => stream.once('drain', resolve));
  };
  // Only a full buffer returns a promise, so the per-row cost stays a function call.
  await produce((line) => {
    buffer.push(line);
    size += line.length;
    return size > 1 << 20 ? flush() : undefined;
  });
  await flush();
  stream.end();
  await done;
}

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * The ends of the timestamp type that a real V1 may hold: ±infinity, dates before the common
 * era, and instants beyond what a JavaScript Date holds (year 275760).
 */
const EDGE_TIMES = {
  infinity: 'infinity',
  minusInfinity: '-infinity',
  bc: '0044-03-15 10:00:00.123 BC',
  beyondJs: '275760-09-13 00:00:00.001',
};

/**
 * JSON documents at the edges of the type: a top-level `null` (not SQL NULL), scalars, empty
 * containers, nested nulls, numbers JavaScript cannot hold exactly (beyond 2^53, 1e300, 1e-300,
 * -0, long fractions), and unicode escapes.
 */
const EDGE_JSON = [
  'null',
  esc(
    '{"big": 123456789012345678901234567890, "huge": 1e300, "tiny": 1E-300, "neg0": -0, "prec": 0.1000000000000000055511151231257827, "int53": 9007199254740993}',
  ),
  '[]',
  esc('{"s": "\\u00e9\\ud83d\\ude00\\u0001 \\"q\\" \\\\", "empty": ""}'),
  '{"a": null, "b": {"c": [null, {}, []]}}',
  'true',
  '""',
];

/**
 * Drops a table's secondary indexes and foreign keys (not its primary key) and returns the DDL
 * that recreates them exactly, names included.
 */
async function dropSecondaryStructures(client: PoolClient, schema: string, table: string): Promise<string[]> {
  const qualified = `${ident(schema)}.${ident(table)}`;
  const { rows: fks } = await client.query<{ name: string; def: string }>(
    `SELECT conname AS name, pg_get_constraintdef(oid) AS def FROM pg_constraint
      WHERE conrelid = $1::regclass AND contype = 'f'`,
    [qualified],
  );
  const { rows: indexes } = await client.query<{ name: string; def: string }>(
    `SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS def FROM pg_index i
       JOIN pg_class c ON c.oid = i.indexrelid
      WHERE i.indrelid = $1::regclass AND NOT i.indisprimary AND NOT i.indisunique`,
    [qualified],
  );
  for (const fk of fks) await client.query(`ALTER TABLE ${qualified} DROP CONSTRAINT ${ident(fk.name)}`);
  for (const index of indexes) await client.query(`DROP INDEX ${ident(schema)}.${ident(index.name)}`);
  return [
    ...indexes.map((index) => index.def),
    ...fks.map((fk) => `ALTER TABLE ${qualified} ADD CONSTRAINT ${ident(fk.name)} ${fk.def}`),
  ];
}

/**
 * Writes realistic, deterministic V1 data through the V1 schema with COPY: users, devices,
 * telemetry (`device_data`) and alerts, including the odd-but-valid rows a real V1 holds:
 * NULLs wherever allowed, empty and large JSON, unicode, duplicate timestamps, devices without
 * telemetry, telemetry far older than any device and in the far future, JSON with varied key
 * order and whitespace-significant strings, and the edges of every column's type: JSON `null`
 * beside SQL NULL, numbers JavaScript cannot hold, unicode escapes, empty strings, ±infinity,
 * dates before the common era and beyond JavaScript's (see EDGE_TIMES and EDGE_JSON).
 */
export async function generateV1(v1: Pool, options: GenerateOptions): Promise<GenerateResult> {
  const started = process.hrtime.bigint();
  const random = prng(options.seed);
  const schema = ident(options.schema ?? 'public');
  const now = (options.now ?? new Date('2026-01-01T00:00:00Z')).getTime();
  const day = 86_400_000;
  const pick = <T>(list: readonly T[]) => list[Math.floor(random() * list.length)];
  const id = (prefix: string, n: number) =>
    `${prefix}${n.toString(36).padStart(6, '0')}${Math.floor(random() * 1e9).toString(36)}`;

  const userCount = options.users ?? Math.max(3, Math.ceil(options.devices / 10));
  const userIds = Array.from({ length: userCount }, (_, i) => id('cu', i));
  const deviceIds = Array.from({ length: options.devices }, (_, i) => id('cd', i));
  // About 5% of devices (and at least one when there are several) never send telemetry.
  const silent = Math.max(options.devices > 1 ? 1 : 0, Math.floor(options.devices * 0.05));
  const talking = deviceIds.slice(0, Math.max(1, options.devices - silent));
  const alertCount = Math.round(options.devices * (options.alertsPerDevice ?? 2));

  const client = await v1.connect();
  try {
    await client.query('BEGIN');
    await copyRows(
      client,
      `COPY ${schema}.users (id, email, name, "passwordHash", role, "createdAt", "updatedAt") FROM STDIN`,
      async (push) => {
        for (let i = 0; i < userCount; i++) {
          const created = now - Math.floor(random() * 400) * day;
          const name = i % 7 === 3 ? NULL : i % 50 === 1 ? '' : esc(`${pick(NAMES)} ${i}`);
          const email = i % 11 === 2 ? `ünïcode.${i}@exämple.com` : `user${i}@example.com`;
          const role = i === 0 ? 'ADMIN' : pick(['ADMIN', 'OPERATOR', 'VIEWER', 'VIEWER']);
          {
            const updated = iso(created + Math.floor(random() * 30) * day);
            // Every 50th user from the second on holds the ends of time, and an empty hash.
            const edge = i % 50 === 1 ? 1 : i % 50 === 2 ? 2 : 0;
            const hash = edge === 2 ? '' : `$2b$10$${i.toString(36).padStart(53, 'x')}`;
            const times =
              edge === 1
                ? `${EDGE_TIMES.infinity}\t${EDGE_TIMES.minusInfinity}`
                : edge === 2
                  ? `${EDGE_TIMES.bc}\t${EDGE_TIMES.beyondJs}`
                  : `${iso(created)}\t${updated}`;
            const p = push(`${userIds[i]}\t${email}\t${name}\t${hash}\t${role}\t${times}\n`);
            if (p) await p;
          }
        }
      },
    );
    await copyRows(
      client,
      `COPY ${schema}.devices (id, name, type, status, config, "ownerId", "lastSeenAt", "createdAt", "updatedAt") FROM STDIN`,
      async (push) => {
        for (let i = 0; i < options.devices; i++) {
          const created = now - Math.floor(random() * 365) * day;
          let config: string;
          switch (i % 9) {
            case 0:
              config = NULL;
              break;
            case 1:
              config = '{}';
              break;
            case 2:
              config = esc(
                JSON.stringify({ firmware: '1.2.3', thresholds: { high: 30.5, low: -5 }, tags: ['a', 'b'] }),
              );
              break;
            case 3:
              config = esc(
                JSON.stringify({
                  z: 1,
                  a: { y: [1, 2, { b: null }], x: 'naïve\ttab\nline "quoted" \\ back' },
                }),
              );
              break;
            case 4:
              config =
                i % 4 === 0 ? esc(JSON.stringify({ blob: 'x'.repeat(20_000), n: i })) : '{"interval": 60}';
              break;
            default:
              config = esc(JSON.stringify({ interval: 30 + (i % 5) * 15, unit: 'celsius' }));
          }
          const owner = i % 6 === 0 ? NULL : pick(userIds);
          let lastSeen = i % 5 === 0 ? NULL : iso(now - Math.floor(random() * 30 * day));
          let name = i % 13 === 7 ? esc(`Gerät ${i} — 温度`) : `device-${i}`;
          let type = pick(DEVICE_TYPES);
          let status = pick(STATUSES);
          let createdAt = iso(created);
          let updatedAt = iso(created + day);
          // Devices 10-19 of every 20: JSON at its edges, empty strings, the ends of time.
          const edge = i % 20;
          if (edge >= 10 && edge - 10 < EDGE_JSON.length) config = EDGE_JSON[edge - 10];
          if (edge === 11) lastSeen = EDGE_TIMES.infinity;
          if (edge === 12) createdAt = EDGE_TIMES.bc;
          if (edge === 13) updatedAt = EDGE_TIMES.beyondJs;
          if (edge === 14) createdAt = EDGE_TIMES.minusInfinity;
          if (edge === 17) type = '';
          if (edge === 18) status = '';
          if (edge === 19) name = '';
          {
            const p = push(
              `${deviceIds[i]}\t${name}\t${type}\t${status}\t${config}\t${owner}\t${lastSeen}\t${createdAt}\t${updatedAt}\n`,
            );
            if (p) await p;
          }
        }
      },
    );
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    client.release();
    throw error;
  }

  // Telemetry is written over two connections so generation and PostgreSQL overlap.
  const streams = 1;
  const perStream = Math.ceil(options.telemetry / streams);
  const telemetryStarted = process.hrtime.bigint();
  let produced = 0;
  const writeTelemetry = async (c: PoolClient, part: number) => {
    const rnd = prng(options.seed * 7919 + part + 1);
    const from = part * perStream;
    const to = Math.min(options.telemetry, from + perStream);
    const span = 90 * day;
    await copyRows(
      c,
      `COPY ${schema}.device_data ("deviceId", "timestamp", data, protocol, source) FROM STDIN`,
      async (push) => {
        let prevDevice = talking[0];
        let prevTs = now - span;
        for (let i = from; i < to; i++) {
          let device: string;
          let ts: number;
          const r = rnd();
          if (r < 0.01 && i > from) {
            // duplicate timestamp on the same device
            device = prevDevice;
            ts = prevTs;
          } else {
            device = talking[Math.floor(rnd() * talking.length)];
            ts = now - span + Math.floor(((i - from) / (to - from)) * span) + Math.floor(rnd() * 60_000);
            if (i % 50_000 === 17)
              ts = Date.UTC(1970, 0, 1, 0, 0, 0, i % 1000); // older than any device
            else if (i % 50_000 === 29)
              ts = Date.UTC(2099, 11, 31, 23, 59, 59, 999); // far future
            else if (i % 50_000 === 41) ts = Date.UTC(2000, 1, 29, 12, 0, 0, 0); // leap day, far past
          }
          // Before the common era, and beyond a JavaScript Date: times both V2 storages hold.
          const at =
            i % 50_000 === 53 ? EDGE_TIMES.bc : i % 50_000 === 59 && i > from ? EDGE_TIMES.beyondJs : iso(ts);
          let data: string;
          const k = i % 1000;
          if (k === 0) data = '{}';
          else if (k === 1)
            data = esc(
              JSON.stringify({ samples: Array.from({ length: 400 }, (_, j) => j * 0.5), note: 'large' }),
            );
          else if (k === 2)
            data = esc(JSON.stringify({ msg: 'ünïcødé ✓ 漢字 \u0001 "q" \\', nested: { b: 2, a: 1 } }));
          else if (k === 3) data = '[1, 2, 3]';
          else if (k === 4) data = esc('{"b": 1,   "a": {"d": [true, null], "c": 1.50}}');
          else if (k >= 5 && k - 5 < EDGE_JSON.length) data = EDGE_JSON[k - 5];
          else {
            const t = (20 + rnd() * 15).toFixed(2);
            const h = Math.floor(30 + rnd() * 60);
            data =
              k % 2 === 0
                ? `{"temperature": ${t}, "humidity": ${h}}`
                : `{"humidity": ${h}, "temperature": ${t}, "battery": ${Math.floor(rnd() * 100)}}`;
          }
          const source = k === 20 ? '' : i % 3 === 0 ? NULL : SOURCES[i % SOURCES.length];
          const protocol = k === 21 ? '' : PROTOCOLS[i % PROTOCOLS.length];
          {
            const p = push(`${device}\t${at}\t${data}\t${protocol}\t${source}\n`);
            if (p) await p;
          }
          prevDevice = device;
          prevTs = ts;
          if (++produced % 100_000 === 0) options.onProgress?.(produced);
        }
      },
    );
  };
  const extra: PoolClient[] = [];
  try {
    await client.query('BEGIN');
    // Into an empty table, load first and build the index and foreign key after, as pg_restore
    // does: the same definitions and names are restored in this transaction.
    const empty = (await client.query(`SELECT NOT EXISTS (SELECT 1 FROM ${schema}.device_data) AS e`)).rows[0]
      .e;
    const deferred = empty
      ? await dropSecondaryStructures(client, options.schema ?? 'public', 'device_data')
      : [];
    const parts = [writeTelemetry(client, 0)];
    for (let p = 1; p < streams; p++) {
      const c = await v1.connect();
      extra.push(c);
      await c.query('BEGIN');
      parts.push(writeTelemetry(c, p));
    }
    await Promise.all(parts);
    if (deferred.length > 0) await client.query(`SET LOCAL maintenance_work_mem = '512MB'`);
    for (const ddl of deferred) await client.query(ddl);
    await client.query('COMMIT');
    for (const c of extra) await c.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    for (const c of extra) await c.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    for (const c of extra) c.release();
  }
  const telemetrySeconds = Number(process.hrtime.bigint() - telemetryStarted) / 1e9;

  try {
    await client.query('BEGIN');
    await copyRows(
      client,
      `COPY ${schema}.alerts (id, "deviceId", severity, message, status, "createdAt", "resolvedAt") FROM STDIN`,
      async (push) => {
        for (let i = 0; i < alertCount; i++) {
          const created = now - Math.floor(random() * 60 * day);
          const open = i % 3 === 0;
          const edge = i % 20;
          const message =
            edge === 7
              ? ''
              : i % 10 === 4
                ? esc(`Température élevée: ${i} °C\nsee "runbook"`)
                : `threshold exceeded #${i}`;
          const status = edge === 7 ? '' : open ? 'OPEN' : pick(['ACKNOWLEDGED', 'RESOLVED']);
          const resolved = open ? NULL : iso(created + Math.floor(random() * day));
          {
            const p = push(
              `${id('ca', i)}\t${pick(deviceIds)}\t${pick(['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'])}\t${message}\t${status}\t${edge === 9 ? EDGE_TIMES.bc : iso(created)}\t${edge === 8 && !open ? EDGE_TIMES.infinity : resolved}\n`,
            );
            if (p) await p;
          }
        }
      },
    );
    await client.query('COMMIT');
    await client.query(`ANALYZE ${schema}.device_data`);
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }

  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return {
    users: userCount,
    devices: options.devices,
    telemetry: options.telemetry,
    alerts: alertCount,
    seconds,
    telemetryRowsPerSec: Math.round(options.telemetry / Math.max(telemetrySeconds, 1e-9)),
  };
}
