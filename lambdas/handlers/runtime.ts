import type { Pool } from 'pg';
import { fetchDatabaseCredentials } from '../adapters/aws/secrets';
import { configFromLambdaEnvironment, type DatabaseConfig, type MigrationConfig } from '../core/config';
import { openPool } from '../core/db';

/** What every migration Lambda needs: the validated configuration and a pool per database. */
export interface Runtime {
  config: MigrationConfig;
  v1: Pool;
  v2: Pool;
}

/** Connections per pool and container; the worker copies one window at a time. */
export const DEFAULT_POOL_MAX = 3;

/**
 * The runtime configuration from the Lambda environment (LAMBDA_ENV and CONFIG_ENV), validated
 * by the one config schema: a missing or bad variable gets ConfigError naming it.
 */
export function configFromEnvironment(env: NodeJS.ProcessEnv = process.env): MigrationConfig {
  return configFromLambdaEnvironment(env);
}

async function open(db: DatabaseConfig, target: string, max: number): Promise<Pool> {
  const credentials =
    'secretArn' in db && db.secretArn ? await fetchDatabaseCredentials(db.secretArn) : undefined;
  return openPool(db, target, { credentials, max });
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
