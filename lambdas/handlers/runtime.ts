import type { Pool } from 'pg';
import { fetchDatabaseCredentials, refreshDatabaseCredentials } from '../adapters/aws/secrets';
import { configFromLambdaEnvironment, type DatabaseConfig, type MigrationConfig } from '../core/config';
import { openPool } from '../core/db';
import { LAMBDA_ENV } from '../../lib/runtime-contract';

/** What every migration Lambda needs: the validated configuration and a pool per database. */
export interface Runtime {
  config: MigrationConfig;
  v1: Pool;
  v2: Pool;
  /**
   * V1 as the owner role of V1_DB_OWNER_SECRET_ARN (the orchestrator's only, when configured):
   * cleanup's rename and the archives' drop go through it, everything else reads with `v1`.
   */
  v1Owner?: Pool;
}

/** Connections of the V1 owner pool: one rename or drop at a time. */
export const OWNER_POOL_MAX = 1;

/** Connections per pool and container; the worker copies one window at a time. */
export const DEFAULT_POOL_MAX = 3;

/**
 * The runtime configuration from the Lambda environment (LAMBDA_ENV and CONFIG_ENV), validated
 * by the one config schema: a missing or bad variable gets ConfigError naming it.
 */
export function configFromEnvironment(env: NodeJS.ProcessEnv = process.env): MigrationConfig {
  return configFromLambdaEnvironment(env);
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
    const env = options.env ?? process.env;
    const ownerSecretArn = env[LAMBDA_ENV.v1OwnerSecretArn];
    const [v1, v2, v1Owner] = await Promise.all([
      open(config.v1, 'V1', max),
      open(config.v2, 'V2', max),
      ownerSecretArn && 'host' in config.v1
        ? open(
            { ...config.v1, user: undefined, password: undefined, secretArn: ownerSecretArn },
            'V1 (owner)',
            OWNER_POOL_MAX,
          )
        : undefined,
    ]);
    return { config, v1, v2, ...(v1Owner ? { v1Owner } : {}) };
  })();
  runtime.catch(() => {
    runtime = undefined;
  });
  return runtime;
}
