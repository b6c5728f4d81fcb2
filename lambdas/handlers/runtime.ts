import type { Pool } from 'pg';
import { fetchDatabaseCredentials, refreshDatabaseCredentials } from '../adapters/aws/secrets';
import {
  CONFIG_ENV,
  parseConfig,
  parseJsonSetting,
  type DatabaseConfig,
  type MigrationConfig,
} from '../core/config';
import { openPool } from '../core/db';
import { ConfigError } from '../core/errors';
import { LAMBDA_ENV } from '../../lib/runtime-contract';

/** What every migration Lambda needs: the validated configuration and a pool per database. */
export interface Runtime {
  config: MigrationConfig;
  v1: Pool;
  v2: Pool;
}

/** Connections per pool and container; the worker copies one window at a time. */
export const DEFAULT_POOL_MAX = 3;

const optional = (value: string | undefined) => (value === undefined || value === '' ? undefined : value);

function databaseFromEnv(env: NodeJS.ProcessEnv, side: 'v1' | 'v2'): Record<string, unknown> {
  const names =
    side === 'v1'
      ? {
          host: LAMBDA_ENV.v1Host,
          port: LAMBDA_ENV.v1Port,
          database: LAMBDA_ENV.v1Database,
          secretArn: LAMBDA_ENV.v1SecretArn,
        }
      : {
          host: LAMBDA_ENV.v2Host,
          port: LAMBDA_ENV.v2Port,
          database: LAMBDA_ENV.v2Database,
          secretArn: LAMBDA_ENV.v2SecretArn,
        };
  return {
    host: env[names.host],
    port: optional(env[names.port]),
    database: env[names.database],
    secretArn: env[names.secretArn],
    ssl: env[LAMBDA_ENV.dbSsl] !== 'false',
  };
}

/**
 * The runtime configuration from the Lambda environment (LAMBDA_ENV and CONFIG_ENV), validated
 * by the one config schema: a missing or bad variable gets ConfigError naming the field.
 */
export function configFromEnvironment(env: NodeJS.ProcessEnv = process.env): MigrationConfig {
  // The database schema is a union (URL or host), whose error would only say "Invalid input".
  const required = [
    LAMBDA_ENV.v1Host,
    LAMBDA_ENV.v1Database,
    LAMBDA_ENV.v1SecretArn,
    LAMBDA_ENV.v2Host,
    LAMBDA_ENV.v2Database,
    LAMBDA_ENV.v2SecretArn,
  ];
  const missing = required.filter((name) => optional(env[name]) === undefined);
  if (missing.length > 0) {
    throw new ConfigError(
      missing.map((field) => ({ field, problem: 'is required' })),
      'Lambda environment',
    );
  }
  const raw: Record<string, unknown> = {
    v1: databaseFromEnv(env, 'v1'),
    v2: databaseFromEnv(env, 'v2'),
    schemas: {
      v1: optional(env[CONFIG_ENV.v1Schema]),
      v2: optional(env[CONFIG_ENV.v2Schema]),
      control: optional(env[CONFIG_ENV.controlSchema]),
    },
    ssmPrefix: optional(env[CONFIG_ENV.ssmPrefix]),
    telemetryStorage: optional(env[CONFIG_ENV.telemetryStorage]),
    tenant: { id: optional(env[CONFIG_ENV.tenantId]) },
    batch: {
      telemetryWindowRows: optional(env[CONFIG_ENV.telemetryWindowRows]),
      concurrency: optional(env[CONFIG_ENV.concurrency]),
      maxReceiveCount: optional(env[CONFIG_ENV.maxReceiveCount]),
    },
    cutover: {
      schedule: env[CONFIG_ENV.cutoverSchedule]
        ? parseJsonSetting(CONFIG_ENV.cutoverSchedule, env[CONFIG_ENV.cutoverSchedule]!)
        : undefined,
    },
    backup: {
      rdsInstanceId: optional(env[LAMBDA_ENV.rdsInstanceId]),
      auroraClusterId: optional(env[LAMBDA_ENV.auroraClusterId]),
    },
  };
  return parseConfig(raw, 'Lambda environment');
}

/**
 * A pool on a database; with a secret, its credentials are fetched at cold start and fetched
 * again once when the database refuses the password (a rotated secret), so a rotation does not
 * stop the workers.
 */
async function open(db: DatabaseConfig, target: string, max: number): Promise<Pool> {
  if (!('secretArn' in db && db.secretArn)) return openPool(db, target, { max });
  const secretArn = db.secretArn;
  const credentials = await fetchDatabaseCredentials(secretArn);
  return openPool(db, target, {
    credentials,
    max,
    refreshCredentials: () => refreshDatabaseCredentials(secretArn),
  });
}

let runtime: Promise<Runtime> | undefined;

/**
 * The configuration and both pools, built once per container at the first call (cold start)
 * and shared by every handler of the container. A failure is not cached: the next invocation
 * tries again (a database that was briefly unreachable must not poison the container).
 */
export function getRuntime(options: { env?: NodeJS.ProcessEnv; poolMax?: number } = {}): Promise<Runtime> {
  runtime ??= (async () => {
    const config = configFromEnvironment(options.env);
    const max = options.poolMax ?? DEFAULT_POOL_MAX;
    const [v1, v2] = await Promise.all([open(config.v1, 'V1', max), open(config.v2, 'V2', max)]);
    return { config, v1, v2 };
  })();
  runtime.catch(() => {
    runtime = undefined;
  });
  return runtime;
}
