import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { CloudWatchClient } from '@aws-sdk/client-cloudwatch';
import { RDSClient } from '@aws-sdk/client-rds';
import { SFNClient } from '@aws-sdk/client-sfn';
import { SQSClient } from '@aws-sdk/client-sqs';
import { SSMClient } from '@aws-sdk/client-ssm';
import { CloudWatchAlarms } from '../adapters/aws/cloudwatch-alarms';
import { RdsSnapshotBackup } from '../adapters/aws/rds-backup';
import { SfnExecutions } from '../adapters/aws/sfn-executions';
import { SqsDeadLetters } from '../adapters/aws/sqs-dead-letters';
import { SqsQueue } from '../adapters/aws/sqs-queue';
import { SsmParameters } from '../adapters/aws/ssm-parameters';
import { ConfigError } from '../core/errors';
import { orchestrate, type OrchestratorDeps } from '../core/orchestrator';
import { safeError, safeThrowable } from '../core/safe-error';
import { LAMBDA_ENV, METRICS_NAMESPACE, SERVICE_NAMES } from '../../lib/runtime-contract';
import { getRuntime } from './runtime';

const logger = new Logger({ serviceName: SERVICE_NAMES.orchestrator });
const metrics = new Metrics({ namespace: METRICS_NAMESPACE, serviceName: SERVICE_NAMES.orchestrator });

let deps: OrchestratorDeps | undefined;

/** The AWS adapters behind the ports, built once per container. */
async function awsDeps(): Promise<OrchestratorDeps> {
  if (deps) return deps;
  const env = process.env;
  const queueUrl = env[LAMBDA_ENV.workerQueueUrl];
  if (!queueUrl)
    throw new ConfigError(
      [{ field: LAMBDA_ENV.workerQueueUrl, problem: 'is required' }],
      'Lambda environment',
    );
  const runtime = await getRuntime();
  const instanceId = env[LAMBDA_ENV.rdsInstanceId];
  const clusterId = env[LAMBDA_ENV.auroraClusterId];
  const alarmName = env[LAMBDA_ENV.healthAlarmName];
  const dlqUrl = env[LAMBDA_ENV.workerDlqUrl];
  deps = {
    ...runtime,
    queue: new SqsQueue(new SQSClient({}), queueUrl),
    ...(dlqUrl ? { deadLetters: new SqsDeadLetters(new SQSClient({}), dlqUrl) } : {}),
    parameters: new SsmParameters(new SSMClient({})),
    executions: new SfnExecutions(new SFNClient({})),
    backup: instanceId
      ? new RdsSnapshotBackup(new RDSClient({}), { instanceId })
      : clusterId
        ? new RdsSnapshotBackup(new RDSClient({}), { clusterId })
        : undefined,
    alarms: alarmName
      ? new CloudWatchAlarms(new CloudWatchClient({}), { compositeAlarmName: alarmName })
      : undefined,
    metric: (name, value) => metrics.addMetric(name, MetricUnit.Count, value),
  };
  return deps;
}

/**
 * The state machines' Lambda task: one event names one task (validated), the core does it.
 * Errors keep their names (InvalidInputError, PhaseOrderError, MigrationLockedError,
 * TransientDatabaseError, …), which the states' Retry and Catch match, but leave with their name,
 * message and SQLSTATE only (safe-error.ts): the log line and the Step Functions cause carry no row.
 */
export async function handler(event: unknown): Promise<Record<string, unknown>> {
  const task = (event as { task?: unknown })?.task;
  try {
    const result = await orchestrate(await awsDeps(), event);
    logger.info('task done', { task });
    return result;
  } catch (error) {
    logger.error('task failed', { task, error: safeError(error) });
    throw safeThrowable(error);
  } finally {
    metrics.publishStoredMetrics();
  }
}
