import { randomBytes } from 'node:crypto';
import { Client, Pool } from 'pg';
import { APPLICATION_NAME } from '../../lambdas/core/db';
import { ENV, timescaleMissing, type TestServerKind } from './servers';

/** A server started by global setup: embedded PostgreSQL, or the TimescaleDB one. */
export function testServer(kind: TestServerKind = 'embedded'): {
  port: number;
  user: string;
  password: string;
} {
  const port = Number(process.env[ENV.port[kind]]);
  if (!port) {
    throw new Error(
      kind === 'embedded'
        ? `${ENV.port.embedded} is not set: run the tests through jest (global setup starts PostgreSQL)`
        : `no TimescaleDB test server: ${timescaleMissing()}`,
    );
  }
  return {
    port,
    user: process.env[ENV.user[kind]] ?? 'postgres',
    password: process.env[ENV.password[kind]] ?? '',
  };
}

export function testUrl(database: string, kind: TestServerKind = 'embedded'): string {
  const { port, user, password } = testServer(kind);
  return `postgres://${user}:${password}@127.0.0.1:${port}/${database}`;
}

async function admin<T>(kind: TestServerKind, fn: (c: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: testUrl('postgres', kind) });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export interface TestDatabases {
  server: TestServerKind;
  v1Url: string;
  v2Url: string;
  v1Name: string;
  v2Name: string;
  /** Pools the suite can use freely; closed by drop(). */
  v1: Pool;
  v2: Pool;
  drop(): Promise<void>;
}

/** Creates a fresh, empty V1 and V2 database pair for one suite, on the given test server. */
export async function freshDatabases(
  prefix = 't',
  server: TestServerKind = 'embedded',
): Promise<TestDatabases> {
  const id = randomBytes(4).toString('hex');
  const v1Name = `${prefix}_${id}_v1`;
  const v2Name = `${prefix}_${id}_v2`;
  await admin(server, async (c) => {
    await c.query(`CREATE DATABASE "${v1Name}"`);
    await c.query(`CREATE DATABASE "${v2Name}"`);
  });
  const v1Url = testUrl(v1Name, server);
  const v2Url = testUrl(v2Name, server);
  const v1 = new Pool({ connectionString: v1Url, max: 4, application_name: APPLICATION_NAME });
  const v2 = new Pool({ connectionString: v2Url, max: 4, application_name: APPLICATION_NAME });
  v1.on('error', () => undefined);
  v2.on('error', () => undefined);
  return {
    server,
    v1Url,
    v2Url,
    v1Name,
    v2Name,
    v1,
    v2,
    drop: async () => {
      await Promise.all([v1.end(), v2.end()]);
      await admin(server, async (c) => {
        await c.query(`DROP DATABASE IF EXISTS "${v1Name}" WITH (FORCE)`);
        await c.query(`DROP DATABASE IF EXISTS "${v2Name}" WITH (FORCE)`);
      });
    },
  };
}

export async function createDatabase(name: string, server: TestServerKind = 'embedded'): Promise<void> {
  await admin(server, (c) => c.query(`CREATE DATABASE "${name}"`));
}

export async function dropDatabase(name: string, server: TestServerKind = 'embedded'): Promise<void> {
  await admin(server, (c) => c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
}

/** One more database beside a suite's pair (a second V2, a restore target): its URL, a pool, and drop(). */
export interface ExtraDatabase {
  name: string;
  url: string;
  /** Closed by drop(). */
  pool: Pool;
  drop(): Promise<void>;
}

/** Creates the database `name` on the given test server (see ExtraDatabase). */
export async function extraDatabase(
  name: string,
  server: TestServerKind = 'embedded',
): Promise<ExtraDatabase> {
  await createDatabase(name, server);
  const url = testUrl(name, server);
  const pool = new Pool({ connectionString: url, max: 4 });
  // An idle connection ended by the database's drop must not crash the suite.
  pool.on('error', () => undefined);
  return {
    name,
    url,
    pool,
    drop: async () => {
      await pool.end();
      await dropDatabase(name, server);
    },
  };
}

/**
 * A describe body's databases (and whatever `make` builds with them), made once before its tests
 * and dropped after them. Returns the object `make` made, filled in before the first test (read
 * its fields in tests and hooks, not in the describe body).
 */
export function suiteSetup<T extends { dbs: Pick<TestDatabases, 'drop'> }>(make: () => Promise<T>): T {
  const made = {} as T;
  beforeAll(async () => {
    Object.assign(made, await make());
  });
  afterAll(() => (made as Partial<T>).dbs?.drop());
  return made;
}
