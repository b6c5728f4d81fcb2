import { execFile } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import { countV1Rows, V1_TABLE_NAMES } from '../../core/v1-schema';
import { APPLICATION_NAME, ident } from '../../core/db';
import { BackupError } from '../../core/errors';
import type { BackupPort, BackupRef, BackupStatus, BackupVerification } from '../../ports/backup';
import { Pool } from 'pg';

const run = promisify(execFile);

export interface LocalBackupOptions {
  /** URL of the V1 database to back up. */
  v1Url: string;
  v1Schema: string;
  /** `auto` uses pg_dump when one of the server's major version is on PATH, else a template copy. */
  mode: 'auto' | 'pg_dump' | 'template';
  /** Folder for dump files. */
  directory: string;
  /** How long to wait for other sessions to leave V1 before a template copy gives up. */
  templateWaitMs?: number;
}

/** The major version of `pg_dump` on PATH, or undefined when there is none. */
export async function pgDumpMajor(binary = 'pg_dump'): Promise<number | undefined> {
  try {
    const { stdout } = await run(binary, ['--version']);
    const match = /(\d+)(?:\.\d+)?/.exec(stdout);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

async function withClient<T>(url: string, fn: (c: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: url, application_name: 'iot-v2-migration-backup' });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function databaseUrl(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

function stamp(now = new Date()): string {
  return now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '_').toLowerCase();
}

/**
 * Local backups of V1: a `pg_dump -Fc` archive when a pg_dump matching the server's major
 * version is on PATH, else a database copy made with `CREATE DATABASE … TEMPLATE`. Both are
 * complete by the time `start` returns.
 */
export class LocalBackup implements BackupPort {
  /** Why the last start chose its method (reported by Phase 1). */
  lastChoice = '';

  constructor(private readonly options: LocalBackupOptions) {}

  async start(label: string): Promise<BackupRef> {
    const { serverMajor, database } = await withClient(this.options.v1Url, async (c) => ({
      serverMajor: Math.floor(
        Number((await c.query('SHOW server_version_num')).rows[0].server_version_num) / 10000,
      ),
      database: (await c.query('SELECT current_database() AS d')).rows[0].d as string,
    }));
    const dumpMajor = this.options.mode === 'template' ? undefined : await pgDumpMajor();
    if (this.options.mode === 'pg_dump' && dumpMajor !== serverMajor) {
      throw new BackupError(
        `backup mode pg_dump needs pg_dump ${serverMajor} on PATH (found ${dumpMajor ?? 'none'})`,
        { serverMajor, dumpMajor },
      );
    }
    const safeLabel = label
      .toLowerCase()
      .replace(/[^a-z0-9_]/g, '_')
      .slice(0, 30);
    if (dumpMajor === serverMajor) {
      this.lastChoice = `pg_dump ${dumpMajor} matches the server`;
      mkdirSync(this.options.directory, { recursive: true });
      const file = resolve(this.options.directory, `${safeLabel}_${stamp()}.dump`);
      try {
        // The password goes through the environment, never the command line (visible in `ps`).
        const url = new URL(this.options.v1Url);
        const password = decodeURIComponent(url.password);
        url.password = '';
        await run('pg_dump', ['--format=custom', `--file=${file}`, `--dbname=${url.toString()}`], {
          env: { ...process.env, PGPASSWORD: password },
        });
      } catch (cause) {
        throw new BackupError(
          `pg_dump failed: ${(cause as { stderr?: string }).stderr ?? (cause as Error).message}`,
          {
            file,
          },
          { cause },
        );
      }
      return { id: file, kind: 'pg_dump', location: file };
    }
    this.lastChoice =
      this.options.mode === 'template'
        ? 'template copy forced by config'
        : `no pg_dump ${serverMajor} on PATH (found ${dumpMajor ?? 'none'}): database copy with CREATE DATABASE … TEMPLATE`;
    const copy = `${database}_backup_${stamp()}`.slice(0, 63);
    await this.copyDatabase(database, copy);
    return { id: copy, kind: 'template', location: copy };
  }

  private async copyDatabase(source: string, copy: string): Promise<void> {
    const deadline = Date.now() + (this.options.templateWaitMs ?? 10_000);
    const adminUrl = databaseUrl(this.options.v1Url, 'postgres');
    for (;;) {
      try {
        await withClient(adminUrl, async (c) => {
          // Our own idle pooled connections would block the copy; pools reconnect on demand.
          await c.query(
            `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = $1 AND state = 'idle' AND application_name = $2 AND pid <> pg_backend_pid()`,
            [source, APPLICATION_NAME],
          );
          await c.query(`CREATE DATABASE ${ident(copy)} TEMPLATE ${ident(source)}`);
        });
        return;
      } catch (cause) {
        // 55006: the source database is being accessed by other users.
        if ((cause as { code?: string }).code === '55006' && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 250));
          continue;
        }
        throw new BackupError(
          `copying database ${source} to ${copy} failed: ${(cause as Error).message}` +
            ((cause as { code?: string }).code === '55006'
              ? ' (CREATE DATABASE … TEMPLATE needs no other session on V1; close them or install a matching pg_dump)'
              : ''),
          { source, copy },
          { cause },
        );
      }
    }
  }

  async status(ref: BackupRef): Promise<BackupStatus> {
    if (ref.kind === 'pg_dump') {
      try {
        return statSync(ref.location).size > 0 ? 'available' : 'failed';
      } catch {
        return 'failed';
      }
    }
    const exists = await withClient(databaseUrl(this.options.v1Url, 'postgres'), (c) =>
      c.query('SELECT 1 FROM pg_database WHERE datname = $1 AND datallowconn', [ref.location]),
    );
    return exists.rows.length > 0 ? 'available' : 'failed';
  }

  async verify(ref: BackupRef, expectedRowCounts: Record<string, number>): Promise<BackupVerification> {
    if (ref.kind === 'pg_dump') {
      let toc: string;
      try {
        toc = (await run('pg_restore', ['--list', ref.location], { maxBuffer: 64 * 1024 * 1024 })).stdout;
      } catch (cause) {
        throw new BackupError(
          `backup ${ref.location} is not a readable pg_dump archive`,
          { backup: ref.id },
          { cause },
        );
      }
      const missing = V1_TABLE_NAMES.filter((t) => !new RegExp(`TABLE DATA \\S+ ${t} `).test(toc));
      if (missing.length > 0) {
        throw new BackupError(`backup ${ref.location} has no data for: ${missing.join(', ')}`, { missing });
      }
      return { evidence: { tablesWithData: V1_TABLE_NAMES, bytes: statSync(ref.location).size } };
    }
    if ((await this.status(ref)) !== 'available') {
      throw new BackupError(`backup database ${ref.location} does not exist or does not accept connections`, {
        backup: ref.id,
      });
    }
    const pool = new Pool({ connectionString: databaseUrl(this.options.v1Url, ref.location), max: 1 });
    let counts: Record<string, number>;
    try {
      counts = await countV1Rows(pool, this.options.v1Schema);
    } catch (cause) {
      throw new BackupError(
        `backup database ${ref.location} cannot be read: ${(cause as Error).message}`,
        {
          backup: ref.id,
        },
        { cause },
      );
    } finally {
      await pool.end();
    }
    const differing = Object.entries(expectedRowCounts).filter(([t, n]) => counts[t] !== n);
    if (differing.length > 0) {
      throw new BackupError(
        `backup ${ref.location} row counts differ from V1: ` +
          differing.map(([t, n]) => `${t} has ${counts[t]} (V1 ${n})`).join(', '),
        { expected: expectedRowCounts, actual: counts },
      );
    }
    return { evidence: { rowCounts: counts } };
  }
}
