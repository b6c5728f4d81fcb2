/**
 * What the CDK app and the Lambda code must agree on: environment variable names and metric
 * names. Pure constants (no imports), so the handlers, the client and the constructs can all
 * import this one file and never spell a name twice.
 */

/**
 * Environment variables the migration Lambdas read at cold start (lambdas/handlers/runtime.ts),
 * in addition to `CONFIG_ENV` of lambdas/core/config.ts. None of them ever holds a secret: the
 * databases' credentials are fetched from the Secrets Manager secrets they name.
 */
export const LAMBDA_ENV = {
  v1Host: 'V1_DB_HOST',
  v1Port: 'V1_DB_PORT',
  v1Database: 'V1_DB_NAME',
  v1SecretArn: 'V1_DB_SECRET_ARN',
  v2Host: 'V2_DB_HOST',
  v2Port: 'V2_DB_PORT',
  v2Database: 'V2_DB_NAME',
  v2SecretArn: 'V2_DB_SECRET_ARN',
  /**
   * Orchestrator only: the secret of a V1 role that owns V1's tables, for cleanup's rename and
   * the archives' drop (every other V1 access uses the read-only V1_DB_SECRET_ARN).
   */
  v1OwnerSecretArn: 'V1_DB_OWNER_SECRET_ARN',
  /** `true` (the default on AWS) or `false`: whether connections use TLS with certificate checks. */
  dbSsl: 'MIGRATION_DB_SSL',
  /** Where the bundled `sql/` folder is (read by lambdas/core/migrator.ts). */
  sqlDir: 'MIGRATION_SQL_DIR',
  /** The worker queue's URL (the orchestrator sends window messages to it). */
  workerQueueUrl: 'MIGRATION_WORKER_QUEUE_URL',
  /** The worker queue's DLQ (`redrive` reads failed windows' messages from it). */
  workerDlqUrl: 'MIGRATION_WORKER_DLQ_URL',
  /** RDS instance or Aurora cluster to snapshot in phase 1 (when configured). */
  rdsInstanceId: 'MIGRATION_RDS_INSTANCE_ID',
  auroraClusterId: 'MIGRATION_AURORA_CLUSTER_ID',
  /** The MigrationHealth composite alarm the cutover's health gate reads. */
  healthAlarmName: 'MIGRATION_HEALTH_ALARM',
} as const;

/** The CloudWatch namespace of every custom metric of the migration (worker, orchestrator, client). */
export const METRICS_NAMESPACE = 'IotMigration';

/**
 * Powertools Metrics adds a `service` dimension to every metric it publishes; these are the
 * service names, so the dashboard and alarms can name the exact metric.
 */
export const SERVICE_NAMES = {
  worker: 'backfill-worker',
  orchestrator: 'orchestrator',
  repairWorker: 'repair-worker',
} as const;

/** Metric names, each published by exactly one party. */
export const METRIC_NAMES = {
  /** Worker: one per window copied (count). */
  windowsCopied: 'WindowsCopied',
  /** Worker: rows read from V1 per window (count). */
  rowsCopied: 'RowsCopied',
  /** Worker: one per failed delivery of a window (count). */
  windowFailed: 'WindowFailed',
  /** Repair worker: one per row re-synced V1 → V2 (upserted or deleted in V2) (count). */
  rowsRepaired: 'RowsRepaired',
  /** Repair worker: one per failed delivery of a repair message (count). */
  repairFailed: 'RepairFailed',
  /** Orchestrator: the V2 read-traffic percentage after each change (gauge, 0–100). */
  trafficPercentage: 'TrafficPercentage',
  /** Orchestrator: backfill windows done so far, at each progress poll (gauge). */
  backfillWindowsDone: 'BackfillWindowsDone',
  /** Orchestrator: 1 while the backfill workers are held back (paused, a ceiling, V1 pressure), else 0 (gauge). */
  backfillThrottled: 'BackfillThrottled',
  /** Orchestrator: windows a redrive sent back to the workers or reset to pending (count per redrive). */
  backfillWindowsRedriven: 'BackfillWindowsRedriven',
  /** Orchestrator: windows whose verification found a mismatch (count per run). */
  verificationMismatchedWindows: 'VerificationMismatchedWindows',
  /**
   * Client (the IoT backend's shadow reads): one per read whose V2 answer differed from V1.
   * Published in METRICS_NAMESPACE with NO dimensions, so one alarm covers every backend host.
   */
  shadowReadMismatch: 'ShadowReadMismatch',
} as const;

/** A metric name of METRIC_NAMES. */
export type MetricName = (typeof METRIC_NAMES)[keyof typeof METRIC_NAMES];

/**
 * Phase 1's RDS/Aurora snapshots are named `<SNAPSHOT_ID_PREFIX><label>`; the orchestrator may
 * create and describe only snapshots with this prefix.
 */
export const SNAPSHOT_ID_PREFIX = 'iot-migration-';
