import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { LAMBDA_ENV } from '../../lib/runtime-contract';
import { ConfigError, InvalidMessageError } from './errors';
import { throttleConfigSchema } from './throttle-config';

/** A PostgreSQL identifier we are willing to quote into SQL (schema names from config). */
const identifier = z
  .string()
  .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier (letters, digits, _; max 63)');

const port = z.coerce.number().int().min(1).max(65535);

/**
 * A database to connect to: a URL, or host/port/database with either a password (local use)
 * or a Secrets Manager secret (on AWS; fetched at cold start, never put in the environment).
 */
export const urlDatabaseSchema = z
  .object({
    url: z.string().regex(/^postgres(ql)?:\/\/.+/, 'must be a postgres:// or postgresql:// URL'),
    ssl: z.boolean().optional(),
  })
  .strict();
export const hostDatabaseSchema = z
  .object({
    host: z.string().min(1),
    port: port.default(5432),
    database: z.string().min(1),
    user: z.string().min(1).optional(),
    password: z.string().optional(),
    secretArn: z
      .string()
      .regex(/^arn:aws[a-z-]*:secretsmanager:/, 'must be a Secrets Manager ARN')
      .optional(),
    ssl: z.boolean().optional(),
  })
  .strict();
export const databaseSchema = z.union([urlDatabaseSchema, hostDatabaseSchema]);
export type DatabaseConfig = z.infer<typeof databaseSchema>;

export const TELEMETRY_STORAGE_MODES = ['auto', 'timescaledb', 'partitioned'] as const;
export const BACKUP_MODES = ['auto', 'pg_dump', 'export', 'rds-snapshot', 'aurora-snapshot'] as const;

export const DEFAULT_TENANT = {
  id: 'default_tenant_id',
  name: 'Default Tenant',
  slug: 'default',
  plan: 'ENTERPRISE',
  status: 'ACTIVE',
} as const;

export const DEFAULT_SSM_PREFIX = '/iot-migration';
export const DEFAULT_TELEMETRY_WINDOW_ROWS = 50_000;
export const DEFAULT_ENTITY_WINDOW_ROWS = 10_000;
export const DEFAULT_WORKER_CONCURRENCY = 2;
/** Receives of a window message before it goes to the DLQ (and the worker marks it failed). */
export const DEFAULT_MAX_RECEIVE_COUNT = 5;
/** The schema names when none are configured. */
export const DEFAULT_SCHEMAS = { v1: 'public', v2: 'public', control: 'migration_control' } as const;

/**
 * The limits of every bounded setting, in one place: the run-time schema below and the stack
 * configuration (lib/config.ts) both read them, so a stack cannot deploy a value the Lambdas
 * would refuse at cold start.
 */
export const CONFIG_LIMITS = {
  /** Workers copying windows at once (also the SQS event source's maximum concurrency). */
  concurrency: { min: 1, max: 64 },
  /** Deliveries of a window message before it goes to the DLQ. */
  maxReceiveCount: { min: 1, max: 100 },
  telemetryWindowRows: { min: 100, max: 5_000_000 },
  entityWindowRows: { min: 2, max: 1_000_000 },
  /** Levels of the cutover schedule. */
  cutoverLevels: { min: 1, max: 20 },
  /** Traffic to V2 of one cutover level, in percent. */
  cutoverPercentage: { min: 1, max: 100 },
  /** Bake time of one cutover level, in seconds (7 days). */
  bakeSeconds: { min: 0, max: 7 * 86_400 },
} as const;

/** One level of the cutover: traffic to V2 in percent, then a bake time before the health gate. */
export interface CutoverLevel {
  percentage: number;
  bakeSeconds: number;
}

/** The one default cutover schedule: 10 → 25 → 50 → 100 %, 30 minutes' bake each. */
export const DEFAULT_CUTOVER_SCHEDULE: readonly CutoverLevel[] = [
  { percentage: 10, bakeSeconds: 1800 },
  { percentage: 25, bakeSeconds: 1800 },
  { percentage: 50, bakeSeconds: 1800 },
  { percentage: 100, bakeSeconds: 1800 },
];

/**
 * The ordering rules of a cutover schedule (strictly increasing, ending at 100), as a zod
 * refinement shared by the run-time schema and the stack configuration.
 */
export function checkCutoverOrder(levels: readonly { percentage: number }[], ctx: z.RefinementCtx): void {
  levels.forEach((level, i) => {
    if (i > 0 && level.percentage <= levels[i - 1].percentage) {
      ctx.addIssue({
        code: 'custom',
        path: [i, 'percentage'],
        message: `levels must increase (the level before is ${levels[i - 1].percentage})`,
      });
    }
  });
  if (levels.length > 0 && levels[levels.length - 1].percentage !== 100) {
    ctx.addIssue({
      code: 'custom',
      path: [levels.length - 1, 'percentage'],
      message: 'the last level must be 100',
    });
  }
}

const { cutoverLevels, cutoverPercentage, bakeSeconds } = CONFIG_LIMITS;

/** A cutover schedule: strictly increasing levels within 1–100 that end at 100. */
export const cutoverScheduleSchema = z
  .array(
    z
      .object({
        percentage: z.number().int().min(cutoverPercentage.min).max(cutoverPercentage.max),
        bakeSeconds: z.number().int().min(bakeSeconds.min).max(bakeSeconds.max),
      })
      .strict(),
  )
  .min(cutoverLevels.min)
  .max(cutoverLevels.max)
  .superRefine(checkCutoverOrder);

/** An integer setting (a number, or its text from the environment) within its CONFIG_LIMITS. */
const bounded = (name: 'telemetryWindowRows' | 'entityWindowRows' | 'concurrency' | 'maxReceiveCount') =>
  z.coerce.number().int().min(CONFIG_LIMITS[name].min).max(CONFIG_LIMITS[name].max);

/** The one schema of the migration's configuration; every field has a default but the databases. */
export const configSchema = z
  .object({
    v1: databaseSchema,
    v2: databaseSchema,
    schemas: z
      .object({
        v1: identifier.default(DEFAULT_SCHEMAS.v1),
        v2: identifier.default(DEFAULT_SCHEMAS.v2),
        control: identifier.default(DEFAULT_SCHEMAS.control),
      })
      .strict()
      .default({ ...DEFAULT_SCHEMAS }),
    tenant: z
      .object({
        id: z.string().min(1).max(200).default(DEFAULT_TENANT.id),
        name: z.string().min(1).max(200).default(DEFAULT_TENANT.name),
        slug: z
          .string()
          .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be lower-case letters, digits and dashes')
          .default(DEFAULT_TENANT.slug),
        plan: z.string().min(1).max(50).default(DEFAULT_TENANT.plan),
        status: z.string().min(1).max(50).default(DEFAULT_TENANT.status),
      })
      .strict()
      .default({ ...DEFAULT_TENANT }),
    ssmPrefix: z
      .string()
      .regex(/^(\/[A-Za-z0-9_.-]+)+$/, 'must look like /name or /a/b (no trailing slash)')
      .default(DEFAULT_SSM_PREFIX),
    telemetryStorage: z.enum(TELEMETRY_STORAGE_MODES).default('auto'),
    backup: z
      .object({
        mode: z.enum(BACKUP_MODES).default('auto'),
        /** Where local backups go (pg_dump archives or exports, a folder each). */
        directory: z.string().min(1).default('.rehearsal/backups'),
        rdsInstanceId: z.string().min(1).optional(),
        auroraClusterId: z.string().min(1).optional(),
      })
      .strict()
      .default({ mode: 'auto', directory: '.rehearsal/backups' }),
    batch: z
      .object({
        telemetryWindowRows: bounded('telemetryWindowRows').default(DEFAULT_TELEMETRY_WINDOW_ROWS),
        entityWindowRows: bounded('entityWindowRows').default(DEFAULT_ENTITY_WINDOW_ROWS),
        concurrency: bounded('concurrency').default(DEFAULT_WORKER_CONCURRENCY),
        maxReceiveCount: bounded('maxReceiveCount').default(DEFAULT_MAX_RECEIVE_COUNT),
      })
      .strict()
      .default({
        telemetryWindowRows: DEFAULT_TELEMETRY_WINDOW_ROWS,
        entityWindowRows: DEFAULT_ENTITY_WINDOW_ROWS,
        concurrency: DEFAULT_WORKER_CONCURRENCY,
        maxReceiveCount: DEFAULT_MAX_RECEIVE_COUNT,
      }),
    cutover: z
      .object({
        schedule: cutoverScheduleSchema.default(DEFAULT_CUTOVER_SCHEDULE.map((s) => ({ ...s }))),
        /** A passing verification must be younger than this for the cutover to start. */
        maxVerificationAgeMinutes: z.coerce.number().min(0.01).max(10_080).default(60),
        /** Traffic must have been at 100 % this long before cleanup. */
        soakMinutes: z.coerce.number().min(0).max(43_200).default(1440),
        /** `immediate`: straight to 0 %; `stepwise`: down through the schedule's levels. */
        rollbackMode: z.enum(['immediate', 'stepwise']).default('immediate'),
      })
      .strict()
      .prefault({}),
    cleanup: z
      .object({
        /** Archived V1 tables may be dropped only this long after the rename. */
        retentionDays: z.coerce.number().min(0).max(3650).default(14),
      })
      .strict()
      .prefault({}),
    /** The workers' automatic throttle on V1 pressure (see throttle-config.ts). */
    throttle: throttleConfigSchema,
    /** A run holding the migration lock longer than this is considered dead. */
    lockTtlMinutes: z.coerce.number().min(1).max(10_080).default(360),
  })
  .strict();

export type MigrationConfig = z.infer<typeof configSchema>;
export type MigrationConfigInput = z.input<typeof configSchema>;

/** Environment variables read by `loadConfig`, each defined once. */
export const CONFIG_ENV = {
  file: 'MIGRATION_CONFIG_FILE',
  v1Url: 'V1_DATABASE_URL',
  v2Url: 'V2_DATABASE_URL',
  v1Schema: 'V1_SCHEMA',
  v2Schema: 'V2_SCHEMA',
  controlSchema: 'MIGRATION_CONTROL_SCHEMA',
  ssmPrefix: 'MIGRATION_SSM_PREFIX',
  telemetryStorage: 'MIGRATION_TELEMETRY_STORAGE',
  tenantId: 'MIGRATION_TENANT_ID',
  telemetryWindowRows: 'MIGRATION_TELEMETRY_WINDOW_ROWS',
  concurrency: 'MIGRATION_CONCURRENCY',
  maxReceiveCount: 'MIGRATION_MAX_RECEIVE_COUNT',
  /** JSON: [{"percentage":10,"bakeSeconds":1800}, …] */
  cutoverSchedule: 'MIGRATION_CUTOVER_SCHEDULE',
} as const;

/** zod issues, as the field path and problem that ConfigError and InvalidInputError carry. */
export function describeIssues(error: z.ZodError): { field: string; problem: string }[] {
  return error.issues.map((issue) => ({
    field: issue.path.map(String).join('.'),
    problem: issue.message,
  }));
}

/**
 * Parses a queue message body as JSON of `schema`'s shape; a malformed one gets
 * InvalidMessageError naming each bad field (it fails only its own record).
 */
export function parseMessageBody<S extends z.ZodType>(schema: S, body: string): z.infer<S> {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new InvalidMessageError('body is not JSON', body);
  }
  const result = schema.safeParse(json);
  if (!result.success) {
    throw new InvalidMessageError(
      result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; '),
      body,
    );
  }
  return result.data;
}

/** Validates a configuration object; throws ConfigError naming every bad field. */
export function parseConfig(input: unknown, source = 'configuration'): MigrationConfig {
  const result = configSchema.safeParse(input);
  if (!result.success) throw new ConfigError(describeIssues(result.error), source);
  return result.data;
}

/** A JSON-valued setting; bad JSON is a ConfigError naming it. */
export function parseJsonSetting(name: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new ConfigError([{ field: name, problem: `not valid JSON: ${(cause as Error).message}` }]);
  }
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]] = value;
}

/**
 * Reads the configuration from a JSON file (named by MIGRATION_CONFIG_FILE or `file`) and
 * overlays the environment variables of CONFIG_ENV, then validates it all at once.
 */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  file = env[CONFIG_ENV.file],
): MigrationConfig {
  let base: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (cause) {
      throw new ConfigError([
        { field: CONFIG_ENV.file, problem: `cannot read ${file}: ${(cause as Error).message}` },
      ]);
    }
    try {
      base = JSON.parse(text) as Record<string, unknown>;
    } catch (cause) {
      throw new ConfigError([{ field: file, problem: `not valid JSON: ${(cause as Error).message}` }]);
    }
    if (typeof base !== 'object' || base === null || Array.isArray(base)) {
      throw new ConfigError([{ field: file, problem: 'must hold a JSON object' }]);
    }
  }
  const overlay: [string, string[]][] = [
    [CONFIG_ENV.v1Url, ['v1', 'url']],
    [CONFIG_ENV.v2Url, ['v2', 'url']],
    [CONFIG_ENV.v1Schema, ['schemas', 'v1']],
    [CONFIG_ENV.v2Schema, ['schemas', 'v2']],
    [CONFIG_ENV.controlSchema, ['schemas', 'control']],
    [CONFIG_ENV.ssmPrefix, ['ssmPrefix']],
    [CONFIG_ENV.telemetryStorage, ['telemetryStorage']],
    [CONFIG_ENV.tenantId, ['tenant', 'id']],
    [CONFIG_ENV.telemetryWindowRows, ['batch', 'telemetryWindowRows']],
    [CONFIG_ENV.concurrency, ['batch', 'concurrency']],
    [CONFIG_ENV.maxReceiveCount, ['batch', 'maxReceiveCount']],
  ];
  for (const [name, path] of overlay) {
    const value = env[name];
    if (value !== undefined && value !== '') {
      if (path[1] === 'url') base[path[0]] = {};
      setPath(base, path, value);
    }
  }
  const schedule = env[CONFIG_ENV.cutoverSchedule];
  if (schedule)
    setPath(base, ['cutover', 'schedule'], parseJsonSetting(CONFIG_ENV.cutoverSchedule, schedule));
  return parseConfig(base, file ? `configuration (${file} and environment)` : 'configuration (environment)');
}

const optional = (value: string | undefined) => (value === undefined || value === '' ? undefined : value);

/** Where each field of the Lambdas' configuration comes from (LAMBDA_ENV and CONFIG_ENV). */
const LAMBDA_FIELDS: readonly [string, string][] = [
  ['v1.host', LAMBDA_ENV.v1Host],
  ['v1.port', LAMBDA_ENV.v1Port],
  ['v1.database', LAMBDA_ENV.v1Database],
  ['v1.secretArn', LAMBDA_ENV.v1SecretArn],
  ['v2.host', LAMBDA_ENV.v2Host],
  ['v2.port', LAMBDA_ENV.v2Port],
  ['v2.database', LAMBDA_ENV.v2Database],
  ['v2.secretArn', LAMBDA_ENV.v2SecretArn],
  ['schemas.v1', CONFIG_ENV.v1Schema],
  ['schemas.v2', CONFIG_ENV.v2Schema],
  ['schemas.control', CONFIG_ENV.controlSchema],
  ['ssmPrefix', CONFIG_ENV.ssmPrefix],
  ['telemetryStorage', CONFIG_ENV.telemetryStorage],
  ['tenant.id', CONFIG_ENV.tenantId],
  ['batch.telemetryWindowRows', CONFIG_ENV.telemetryWindowRows],
  ['batch.concurrency', CONFIG_ENV.concurrency],
  ['batch.maxReceiveCount', CONFIG_ENV.maxReceiveCount],
  ['cutover.schedule', CONFIG_ENV.cutoverSchedule],
  ['backup.rdsInstanceId', LAMBDA_ENV.rdsInstanceId],
  ['backup.auroraClusterId', LAMBDA_ENV.auroraClusterId],
];

/** A field of the configuration as the variable that sets it: `batch.concurrency` → MIGRATION_CONCURRENCY. */
function variableOf(field: string): string {
  for (const [path, name] of LAMBDA_FIELDS) {
    if (field === path) return name;
    if (field.startsWith(`${path}.`)) return `${name}[${field.slice(path.length + 1)}]`;
  }
  return field;
}

/** The Lambdas' configuration schema: the one schema, with databases given by host (and secret). */
const lambdaConfigSchema = configSchema.extend({ v1: hostDatabaseSchema, v2: hostDatabaseSchema });

/**
 * The run-time configuration of a migration Lambda, from its environment (LAMBDA_ENV and
 * CONFIG_ENV), validated by the one config schema. A missing or bad variable gets ConfigError
 * naming the variable. The Lambdas call this at cold start; `cdk synth` calls it on the exact
 * environment it gives each function (lib/constructs/migration-function.ts), so a stack that
 * the Lambdas would refuse never deploys.
 */
export function configFromLambdaEnvironment(
  env: Record<string, string | undefined>,
  source = 'Lambda environment',
): MigrationConfig {
  const database = (side: 'v1' | 'v2') => {
    const name = (field: string) => LAMBDA_FIELDS.find(([path]) => path === `${side}.${field}`)![1];
    return {
      host: env[name('host')],
      port: optional(env[name('port')]),
      database: env[name('database')],
      secretArn: env[name('secretArn')],
      ssl: env[LAMBDA_ENV.dbSsl] !== 'false',
    };
  };
  const schedule = optional(env[CONFIG_ENV.cutoverSchedule]);
  const raw = {
    v1: database('v1'),
    v2: database('v2'),
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
      schedule: schedule ? parseJsonSetting(CONFIG_ENV.cutoverSchedule, schedule) : undefined,
    },
    backup: {
      rdsInstanceId: optional(env[LAMBDA_ENV.rdsInstanceId]),
      auroraClusterId: optional(env[LAMBDA_ENV.auroraClusterId]),
    },
  };
  const result = lambdaConfigSchema.safeParse(raw);
  if (!result.success) {
    throw new ConfigError(
      describeIssues(result.error).map((i) => ({
        field: variableOf(i.field),
        problem:
          i.problem === 'Invalid input: expected string, received undefined' ? 'is required' : i.problem,
      })),
      source,
    );
  }
  return result.data;
}
