import { Pool, type PoolClient, type PoolConfig } from 'pg';
import type { DatabaseConfig, MigrationConfig } from './config';
import { DatabaseConnectionError, MigrationError, TransientDatabaseError } from './errors';

/** Credentials resolved from Secrets Manager for a `secretArn` database (see adapters/aws/secrets). */
export interface ResolvedCredentials {
  user: string;
  password: string;
  host?: string;
  port?: number;
  database?: string;
}

/** Quotes an identifier for SQL; only ever used with names from config or fixed lists. */
export function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * Quotes a string constant of the code for DDL, which takes no parameters (a comment, say);
 * never used with input. Standard-conforming strings, so doubling quotes is enough.
 */
export function literal(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** The control schema (migration state, windows, verification results), quoted. */
export function controlSchema(config: Pick<MigrationConfig, 'schemas'>): string {
  return ident(config.schemas.control);
}

/** A URL or connection description with the password removed, safe to log. */
export function describeDatabase(db: DatabaseConfig): string {
  if ('url' in db) {
    try {
      const u = new URL(db.url);
      return `${u.hostname}:${u.port || 5432}${u.pathname}`;
    } catch {
      return '(unparseable URL)';
    }
  }
  return `${db.host}:${db.port}/${db.database}`;
}

/** The application_name of every connection this tool opens (visible in pg_stat_activity). */
export const APPLICATION_NAME = 'iot-v2-migration';

export function poolConfig(db: DatabaseConfig, credentials?: ResolvedCredentials, max = 10): PoolConfig {
  const common: PoolConfig = {
    max,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    application_name: APPLICATION_NAME,
  };
  if ('url' in db) {
    return { ...common, connectionString: db.url, ssl: db.ssl ? { rejectUnauthorized: true } : undefined };
  }
  return {
    ...common,
    host: credentials?.host ?? db.host,
    port: credentials?.port ?? db.port,
    database: credentials?.database ?? db.database,
    user: credentials?.user ?? db.user,
    password: credentials?.password ?? db.password,
    ssl: db.ssl ? { rejectUnauthorized: true } : undefined,
  };
}

/** Explains a connection failure in words an operator can act on. */
export function connectionFailureReason(error: unknown): string {
  const e = error as { code?: string; message?: string };
  switch (e.code) {
    case 'ECONNREFUSED':
      return 'connection refused (is PostgreSQL running on that host and port?)';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name not found';
    case 'ETIMEDOUT':
      return 'connection timed out';
    case '28P01':
      return 'password authentication failed';
    case '28000':
      return 'authentication rejected (no pg_hba.conf entry or role not allowed)';
    case '3D000':
      return e.message ?? 'database does not exist';
    default:
      return e.message ?? String(error);
  }
}

/** Fetches a database's credentials again, bypassing any cache (after a rotation). */
export type CredentialsRefresher = () => Promise<ResolvedCredentials>;

/** SQLSTATE of a refused password: what a rotated secret looks like to an open pool. */
export const INVALID_PASSWORD = '28P01';

/**
 * A pool whose credentials come from a secret that may be rotated: a new connection refused
 * with 28P01 (invalid password) makes it fetch the credentials again, once, and retry that
 * connection with them; connections opened since use them too. Concurrent refusals share one
 * fetch. A second refusal is a DatabaseConnectionError naming the target.
 */
export class RefreshingPool extends Pool {
  private refreshing?: Promise<void>;

  constructor(
    config: PoolConfig,
    private readonly refresh: CredentialsRefresher,
    private readonly target: string,
    private readonly where: string,
  ) {
    super(config);
  }

  /** Fetches the credentials again and gives them to every connection opened from now on. */
  private refreshCredentials(): Promise<void> {
    this.refreshing ??= (async () => {
      const fresh = await this.refresh();
      const options = (this as unknown as { options: PoolConfig }).options;
      options.user = fresh.user;
      options.password = fresh.password;
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async connectRefreshing(): Promise<PoolClient> {
    try {
      return await super.connect();
    } catch (error) {
      if ((error as { code?: string }).code !== INVALID_PASSWORD) throw error;
      await this.refreshCredentials();
      try {
        return await super.connect();
      } catch (again) {
        if ((again as { code?: string }).code !== INVALID_PASSWORD) throw again;
        throw new DatabaseConnectionError(
          this.target,
          this.where,
          'password authentication failed, also with the credentials fetched again from the secret',
          { cause: again },
        );
      }
    }
  }

  // pg-pool's query() calls connect() with a callback; both forms go through the refresh.
  override connect(): Promise<PoolClient>;
  override connect(
    callback: (
      err: Error | undefined,
      client: PoolClient | undefined,
      done: (release?: unknown) => void,
    ) => void,
  ): void;
  override connect(
    callback?: (
      err: Error | undefined,
      client: PoolClient | undefined,
      done: (release?: unknown) => void,
    ) => void,
  ): Promise<PoolClient> | void {
    const connected = this.connectRefreshing();
    if (!callback) return connected;
    connected.then(
      (client) => callback(undefined, client, (release?: unknown) => client.release(release as boolean)),
      (error: Error) => callback(error, undefined, () => undefined),
    );
  }
}

/**
 * Opens a pool and proves it works with one round trip, so a wrong URL, password or database
 * fails here, at once, with a DatabaseConnectionError, before anything is changed. With
 * `refreshCredentials`, a password refused later (a rotated secret) is fetched again once
 * (RefreshingPool).
 */
export async function openPool(
  db: DatabaseConfig,
  target: string,
  options: {
    credentials?: ResolvedCredentials;
    max?: number;
    refreshCredentials?: CredentialsRefresher;
  } = {},
): Promise<Pool> {
  const config = poolConfig(db, options.credentials, options.max);
  const pool = options.refreshCredentials
    ? new RefreshingPool(config, options.refreshCredentials, target, describeDatabase(db))
    : new Pool(config);
  // An idle client that loses its connection must not crash the process.
  pool.on('error', () => undefined);
  try {
    const client = await pool.connect();
    client.release();
  } catch (cause) {
    await pool.end().catch(() => undefined);
    if (cause instanceof DatabaseConnectionError) throw cause;
    throw new DatabaseConnectionError(target, describeDatabase(db), connectionFailureReason(cause), {
      cause,
    });
  }
  return pool;
}

/** SQLSTATEs worth retrying: lock not available, serialization failure, deadlock, connection loss. */
const TRANSIENT_CODES = new Set(['55P03', '40001', '40P01', '57P01', '08006', '08003', '08000']);

export function isTransient(error: unknown): boolean {
  const code = (error as { code?: string }).code;
  return (code !== undefined && TRANSIENT_CODES.has(code)) || error instanceof TransientDatabaseError;
}

/**
 * A connection that could not be made or was lost (pg's pool timing out on a busy server, a
 * reset, a failover), as opposed to a statement PostgreSQL refused: trying again may succeed.
 */
export function isConnectionFailure(error: unknown): boolean {
  const e = error as { code?: unknown; message?: unknown } | undefined;
  if (typeof e?.code === 'string' && /^(ECONNRESET|ECONNREFUSED|ETIMEDOUT|EPIPE|EAI_AGAIN)$/.test(e.code)) {
    return true;
  }
  return (
    typeof e?.message === 'string' &&
    /timeout exceeded when trying to connect|Connection terminated|ECONNRESET|ECONNREFUSED/.test(e.message)
  );
}

/**
 * The error a Step Functions task reports: a transient database failure (isTransient, or a
 * connection failure) that is not already a named MigrationError becomes a
 * TransientDatabaseError, which the states' Retry matches; anything else is returned as it is.
 */
export function asRetryable(error: unknown): unknown {
  if (error instanceof MigrationError || !(isTransient(error) || isConnectionFailure(error))) return error;
  const message = (error as { message?: unknown }).message;
  return new TransientDatabaseError(
    `a database connection failed or was lost; trying again may succeed: ${String(message)}`,
    {},
    { cause: error },
  );
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `fn` in one transaction on a pooled client; transient failures (lock timeouts,
 * serialization failures, deadlocks) are retried with jittered exponential backoff.
 */
export async function withTransaction<T>(
  pool: Pool,
  fn: (client: PoolClient) => Promise<T>,
  options: { attempts?: number; isolation?: 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE' } = {},
): Promise<T> {
  const attempts = options.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    let broken = false;
    try {
      await client.query(options.isolation ? `BEGIN ISOLATION LEVEL ${options.isolation}` : 'BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      try {
        await client.query('ROLLBACK');
      } catch {
        broken = true;
      }
      if (attempt < attempts && isTransient(error)) {
        await sleep(Math.random() * Math.min(2000, 50 * 2 ** attempt));
        continue;
      }
      throw error;
    } finally {
      client.release(broken);
    }
  }
}
