import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { z } from 'zod';
import {
  CONFIG_LIMITS,
  DEFAULT_CUTOVER_SCHEDULE as RUNTIME_CUTOVER_SCHEDULE,
  DEFAULT_MAX_RECEIVE_COUNT,
  DEFAULT_SCHEMAS,
  DEFAULT_SSM_PREFIX,
  DEFAULT_WORKER_CONCURRENCY,
  checkCutoverOrder,
  describeIssues,
} from '../lambdas/core/config';
import { ConfigError } from '../lambdas/core/errors';

/** The CDK context key that holds the stack configuration as an object (or a JSON string). */
export const CONFIG_CONTEXT_KEY = 'migration';
/** The CDK context key that names a JSON file holding the stack configuration. */
export const CONFIG_FILE_CONTEXT_KEY = 'configFile';

/**
 * The cutover steps when none are configured: the run-time default (lambdas/core/config.ts),
 * in the minutes the stack configuration uses.
 */
export const DEFAULT_CUTOVER_SCHEDULE: readonly CutoverStep[] = RUNTIME_CUTOVER_SCHEDULE.map((level) => ({
  percentage: level.percentage,
  bakeMinutes: level.bakeSeconds / 60,
}));
export { DEFAULT_MAX_RECEIVE_COUNT };
/** Messages per worker invocation (each is one window, copied one after the other). */
export const DEFAULT_WORKER_BATCH_SIZE = 1;
/** The worker's timeout: a window copy is one transaction of up to ~50 000 rows. */
export const DEFAULT_WORKER_TIMEOUT_SECONDS = 300;
/** SQS event sources cannot run with a maximum concurrency below 2 (AWS limit). */
export const MIN_EVENT_SOURCE_CONCURRENCY = 2;
/** V2 database CPU (%) above which the health alarm fires. */
export const DEFAULT_DB_CPU_THRESHOLD_PERCENT = 80;
/** V2 database connections above which the health alarm fires. */
export const DEFAULT_DB_CONNECTIONS_THRESHOLD = 400;
/** Worker invocation errors per 5 minutes above which the health alarm fires. */
export const DEFAULT_WORKER_ERRORS_THRESHOLD = 3;
/** Runtime schema names (the defaults of lambdas/core/config.ts). */
export { DEFAULT_SCHEMAS };
/** The demo's V2 schema: V1 and V2 share the demo's one database, so V2 needs its own schema. */
export const DEMO_V2_SCHEMA = 'iot_v2';
/** The database the demo RDS instance creates (holding both V1 and the demo's V2 schema). */
export const DEMO_DATABASE_NAME = 'iot';

export interface CutoverStep {
  readonly percentage: number;
  readonly bakeMinutes: number;
}

const identifier = z
  .string()
  .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier (letters, digits, _; max 63)');

const secretArn = z.string().regex(/^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+/, {
  message: 'must be a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:…)',
});

/**
 * An RDS DB instance or Aurora cluster identifier: 1–63 letters, digits and hyphens, starting
 * with a letter, no two hyphens in a row, not ending in one. Snapshot ids go into IAM resource
 * ARNs, so anything else (a `*`, a `/`) is refused.
 */
export const RDS_IDENTIFIER = /^[A-Za-z](?!.*--)[A-Za-z0-9-]{0,62}(?<!-)$/;
const rdsIdentifier = z
  .string()
  .regex(
    RDS_IDENTIFIER,
    'must be an RDS identifier (1–63 letters, digits and hyphens, starting with a letter, no "--", not ending in "-"); it goes into IAM resource ARNs',
  );

const endpointSchema = z
  .object({
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535).default(5432),
    database: z.string().min(1),
    /** The credentials every function uses: for V1, a read-only role's (see the README). */
    secretArn,
    /**
     * The RDS instance that hosts this database, for CPU and connection alarms (V2 only).
     * Snapshots are configured separately, under `snapshot`.
     */
    rdsInstanceId: z.string().min(1).optional(),
  })
  .strict();

const cutoverStepSchema = z
  .object({
    percentage: z
      .number()
      .int()
      .min(CONFIG_LIMITS.cutoverPercentage.min)
      .max(CONFIG_LIMITS.cutoverPercentage.max),
    bakeMinutes: z
      .number()
      .int()
      .min(CONFIG_LIMITS.bakeSeconds.min / 60)
      .max(CONFIG_LIMITS.bakeSeconds.max / 60),
  })
  .strict();

const backendMetricsSchema = z
  .object({
    namespace: z.string().min(1),
    dimensions: z.record(z.string(), z.string()).default({}),
    /** A metric whose average is the backend's error rate (e.g. percent of 5xx). */
    errorRate: z.object({ metricName: z.string().min(1), threshold: z.number().nonnegative() }).strict(),
    /** A latency metric whose p99 is compared with the threshold (in the metric's unit). */
    p99Latency: z.object({ metricName: z.string().min(1), threshold: z.number().positive() }).strict(),
  })
  .strict();

/** The one schema of the stack's configuration (cdk.json context `migration` or a `configFile`). */
export const stackConfigSchema = z
  .object({
    /** Creates its own VPC and one small RDS PostgreSQL instance for both V1 and V2. */
    demo: z.boolean().default(false),
    vpcId: z
      .string()
      .regex(/^vpc-[0-9a-f]+$/, 'must be a VPC id (vpc-…)')
      .optional(),
    subnetIds: z
      .array(z.string().regex(/^subnet-[0-9a-f]+$/, 'must be a subnet id (subnet-…)'))
      .min(1)
      .optional(),
    securityGroupId: z
      .string()
      .regex(/^sg-[0-9a-f]+$/, 'must be a security group id (sg-…)')
      .optional(),
    v1: endpointSchema
      .extend({
        /**
         * The secret of a V1 role that owns V1's tables, used only by the orchestrator for
         * cleanup's rename and the archives' drop (`secretArn` can then be read-only).
         * @default - none: `secretArn`'s role must own the tables for those two steps
         */
        ownerSecretArn: secretArn.optional(),
      })
      .optional(),
    v2: endpointSchema.optional(),
    /** What phase 1 snapshots (V1's host): an RDS instance or an Aurora cluster, not both. */
    snapshot: z
      .object({ rdsInstanceId: rdsIdentifier.optional(), auroraClusterId: rdsIdentifier.optional() })
      .strict()
      .refine(
        (s) => !(s.rdsInstanceId && s.auroraClusterId),
        'give rdsInstanceId or auroraClusterId, not both',
      )
      .optional(),
    schemas: z
      .object({
        v1: identifier.default(DEFAULT_SCHEMAS.v1),
        v2: identifier.default(DEFAULT_SCHEMAS.v2),
        control: identifier.default(DEFAULT_SCHEMAS.control),
      })
      .strict()
      .optional(),
    ssmPrefix: z
      .string()
      .regex(/^(\/[A-Za-z0-9_.-]+)+$/, 'must look like /name or /a/b (no trailing slash)')
      .default(DEFAULT_SSM_PREFIX),
    cutoverSchedule: z
      .array(cutoverStepSchema)
      .min(CONFIG_LIMITS.cutoverLevels.min)
      .max(CONFIG_LIMITS.cutoverLevels.max)
      .default(DEFAULT_CUTOVER_SCHEDULE.map((s) => ({ ...s })))
      .superRefine(checkCutoverOrder),
    backendMetrics: backendMetricsSchema.optional(),
    databaseAlarms: z
      .object({
        cpuPercent: z.number().min(1).max(100).default(DEFAULT_DB_CPU_THRESHOLD_PERCENT),
        connections: z.number().int().min(1).default(DEFAULT_DB_CONNECTIONS_THRESHOLD),
      })
      .strict()
      .default({
        cpuPercent: DEFAULT_DB_CPU_THRESHOLD_PERCENT,
        connections: DEFAULT_DB_CONNECTIONS_THRESHOLD,
      }),
    notifications: z
      .object({
        email: z.email().optional(),
        topicArn: z
          .string()
          .regex(/^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:.+/, 'must be an SNS topic ARN')
          .optional(),
      })
      .strict()
      .optional(),
    worker: z
      .object({
        /** The event source's maximum concurrency: how many workers copy windows at once. */
        concurrency: z
          .number()
          .int()
          .min(MIN_EVENT_SOURCE_CONCURRENCY, 'an SQS event source needs at least 2')
          .max(CONFIG_LIMITS.concurrency.max)
          .default(DEFAULT_WORKER_CONCURRENCY),
        maxReceiveCount: z
          .number()
          .int()
          .min(CONFIG_LIMITS.maxReceiveCount.min)
          .max(CONFIG_LIMITS.maxReceiveCount.max)
          .default(DEFAULT_MAX_RECEIVE_COUNT),
        batchSize: z.number().int().min(1).max(10).default(DEFAULT_WORKER_BATCH_SIZE),
        timeoutSeconds: z.number().int().min(10).max(900).default(DEFAULT_WORKER_TIMEOUT_SECONDS),
        errorsThreshold: z.number().int().min(1).default(DEFAULT_WORKER_ERRORS_THRESHOLD),
      })
      .strict()
      .default({
        concurrency: DEFAULT_WORKER_CONCURRENCY,
        maxReceiveCount: DEFAULT_MAX_RECEIVE_COUNT,
        batchSize: DEFAULT_WORKER_BATCH_SIZE,
        timeoutSeconds: DEFAULT_WORKER_TIMEOUT_SECONDS,
        errorsThreshold: DEFAULT_WORKER_ERRORS_THRESHOLD,
      }),
  })
  .strict()
  .superRefine((config, ctx) => {
    if (config.demo) {
      for (const field of ['vpcId', 'subnetIds', 'securityGroupId', 'v1', 'v2'] as const) {
        if (config[field] !== undefined) {
          ctx.addIssue({
            code: 'custom',
            path: [field],
            message: 'must not be given with demo: true (the demo creates its own)',
          });
        }
      }
      return;
    }
    for (const field of ['vpcId', 'subnetIds', 'securityGroupId', 'v1', 'v2'] as const) {
      if (config[field] === undefined) {
        ctx.addIssue({ code: 'custom', path: [field], message: 'is required unless demo: true' });
      }
    }
    // Phase 1 refuses to start without a backup of V1: on AWS that is this snapshot.
    if (!config.snapshot?.rdsInstanceId && !config.snapshot?.auroraClusterId) {
      ctx.addIssue({
        code: 'custom',
        path: ['snapshot'],
        message:
          "is required unless demo: true: give rdsInstanceId or auroraClusterId of V1's host " +
          '(Phase 1 backs V1 up with it and fails without it)',
      });
    }
    // V2's tables have V1's names (users, devices, alerts): one schema of one database cannot hold both.
    const schemas = { ...DEFAULT_SCHEMAS, ...config.schemas };
    const v1 = config.v1;
    const v2 = config.v2;
    if (
      v1 &&
      v2 &&
      v1.host === v2.host &&
      v1.port === v2.port &&
      v1.database === v2.database &&
      schemas.v1 === schemas.v2
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['schemas', 'v2'],
        message: `must differ from schemas.v1 ("${schemas.v1}") when V1 and V2 are the same database (V2's tables have V1's names)`,
      });
    }
  });

export type StackConfigInput = z.input<typeof stackConfigSchema>;
type ParsedStackConfig = z.output<typeof stackConfigSchema>;
export type DatabaseEndpoint = z.output<typeof endpointSchema> & { readonly ownerSecretArn?: string };

/** A validated demo configuration: the databases and network are created by the stack. */
export type DemoStackConfig = ParsedStackConfig & { readonly demo: true };
/** A validated configuration for existing databases and network. */
export type ExistingStackConfig = ParsedStackConfig & {
  readonly demo: false;
  readonly vpcId: string;
  readonly subnetIds: string[];
  readonly securityGroupId: string;
  readonly v1: DatabaseEndpoint;
  readonly v2: DatabaseEndpoint;
};
/** The validated stack configuration. */
export type StackConfig = (DemoStackConfig | ExistingStackConfig) & {
  readonly schemas: { v1: string; v2: string; control: string };
};

/** Validates a stack configuration; throws ConfigError naming every bad field. */
export function parseStackConfig(input: unknown, source = 'stack configuration'): StackConfig {
  const result = stackConfigSchema.safeParse(input);
  if (!result.success) throw new ConfigError(describeIssues(result.error), source);
  const parsed = result.data;
  const schemas = {
    ...DEFAULT_SCHEMAS,
    ...(parsed.demo ? { v2: DEMO_V2_SCHEMA } : {}),
    ...parsed.schemas,
  };
  if (schemas.v1 === schemas.v2 && parsed.demo) {
    throw new ConfigError(
      [{ field: 'schemas.v2', problem: 'must differ from schemas.v1 in the demo (both share one database)' }],
      source,
    );
  }
  return { ...parsed, schemas } as StackConfig;
}

/** The demo configuration, used when no configuration is given (so `cdk synth` works as is). */
export function demoStackConfig(): StackConfig {
  return parseStackConfig({ demo: true }, 'demo stack configuration');
}

/** What loadStackConfig needs of the CDK app: its context. */
export interface ContextSource {
  tryGetContext(key: string): unknown;
}

/**
 * Reads the stack configuration from CDK context: `migration` (an object, or a JSON string when
 * given with `-c migration=…`) or `configFile` (a JSON file, relative to `baseDir`); with
 * neither, the demo configuration. Both at once is an error, so nothing is silently ignored.
 */
export function loadStackConfig(context: ContextSource, baseDir = process.cwd()): StackConfig {
  const inline = context.tryGetContext(CONFIG_CONTEXT_KEY);
  const file = context.tryGetContext(CONFIG_FILE_CONTEXT_KEY);
  if (inline !== undefined && file !== undefined) {
    throw new ConfigError([
      {
        field: CONFIG_FILE_CONTEXT_KEY,
        problem: `give either context ${CONFIG_CONTEXT_KEY} or ${CONFIG_FILE_CONTEXT_KEY}, not both`,
      },
    ]);
  }
  if (file !== undefined) {
    if (typeof file !== 'string' || file === '') {
      throw new ConfigError([{ field: CONFIG_FILE_CONTEXT_KEY, problem: 'must be a file path' }]);
    }
    const path = resolve(baseDir, file);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (cause) {
      throw new ConfigError([
        { field: CONFIG_FILE_CONTEXT_KEY, problem: `cannot read ${path}: ${(cause as Error).message}` },
      ]);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (cause) {
      throw new ConfigError([
        { field: CONFIG_FILE_CONTEXT_KEY, problem: `${path} is not valid JSON: ${(cause as Error).message}` },
      ]);
    }
    return parseStackConfig(json, `stack configuration (${path})`);
  }
  if (inline !== undefined) {
    let value = inline;
    if (typeof inline === 'string') {
      try {
        value = JSON.parse(inline);
      } catch (cause) {
        throw new ConfigError([
          { field: CONFIG_CONTEXT_KEY, problem: `not valid JSON: ${(cause as Error).message}` },
        ]);
      }
    }
    return parseStackConfig(value, `stack configuration (context ${CONFIG_CONTEXT_KEY})`);
  }
  return demoStackConfig();
}
