#!/usr/bin/env -S npx tsx
/**
 * `npm run seed:v1 -- --devices N --telemetry M --seed S [--url postgres://…] [--schema public]`
 * Writes deterministic V1 data. Without --url (or V1_DATABASE_URL) it writes into a throw-away
 * embedded PostgreSQL, which is how the generator's speed is measured.
 */
import { Pool } from 'pg';
import { z } from 'zod';
import { startLocalPostgres } from '../lambdas/adapters/local/embedded-pg';
import { applyV1Schema, generateV1 } from '../lambdas/adapters/local/v1-generator';
import { openPool } from '../lambdas/core/db';
import { InvalidInputError } from '../lambdas/core/errors';
import { exitOnError, parseArgs, type CommandHelp } from './cli-args';

const flags = z
  .object({
    devices: z.coerce.number().int().min(1).max(10_000_000).default(1000).describe('devices to generate'),
    telemetry: z.coerce
      .number()
      .int()
      .min(0)
      .max(1_000_000_000)
      .default(100_000)
      .describe('telemetry rows to generate'),
    seed: z.coerce.number().int().min(0).default(1).describe('seed (same seed, same data)'),
    url: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
      .optional()
      .describe('the V1 database to write into (or V1_DATABASE_URL); without: a throw-away embedded one'),
    schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]*$/, 'must be a lower-case SQL identifier')
      .default('public')
      .describe('the V1 schema'),
    createSchema: z.boolean().default(false).describe('create the V1 tables when they do not exist'),
  })
  .strict();

const HELP: CommandHelp = {
  usage: 'npm run seed:v1 -- [flags]',
  summary:
    'Writes a deterministic V1 (users, devices, telemetry, alerts). Without --url (or V1_DATABASE_URL)\n' +
    'it writes into a throw-away embedded PostgreSQL, which is how the generator’s speed is measured.',
  values: { devices: 'N', telemetry: 'N', seed: 'S', url: 'URL', schema: 'NAME' },
  notes: ['The last line printed is one JSON object (rows generated, seconds, rows/s).'],
};

async function main() {
  const args = parseArgs(process.argv.slice(2), flags, HELP, 'seed:v1');
  const url = args.url ?? process.env.V1_DATABASE_URL;
  const local = url ? undefined : await startLocalPostgres();
  let pool: Pool | undefined;
  try {
    if (local) {
      await local.createDatabase('v1');
      console.log(
        `no --url or V1_DATABASE_URL: writing into a throw-away embedded PostgreSQL on port ${local.port}`,
      );
    }
    pool = await openPool({ url: url ?? local!.url('v1') }, 'V1');
    const exists = await pool.query('SELECT to_regclass($1) AS t', [`${args.schema}.device_data`]);
    if (!exists.rows[0].t) {
      if (!local && !args.createSchema) {
        throw new InvalidInputError('command-line flags', [
          {
            field: '--schema',
            problem: `${args.schema}.device_data does not exist: pass --create-schema to create the V1 tables`,
          },
        ]);
      }
      await applyV1Schema(pool, args.schema);
    }
    const result = await generateV1(pool, {
      ...args,
      onProgress: (n) =>
        console.log(`  telemetry ${n.toLocaleString('en-US')} / ${args.telemetry.toLocaleString('en-US')}`),
    });
    console.log(
      `generated ${result.users} users, ${result.devices} devices, ${result.telemetry} telemetry rows, ` +
        `${result.alerts} alerts in ${result.seconds.toFixed(2)} s (${result.telemetryRowsPerSec.toLocaleString('en-US')} telemetry rows/s)`,
    );
    console.log(JSON.stringify(result));
  } finally {
    await pool?.end();
    await local?.stop();
  }
}

main().catch((error: unknown) => exitOnError(error, 'run `npm run seed:v1 -- --help` for the flags'));
