import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { CloudWatchClient } from '@aws-sdk/client-cloudwatch';
import { RDSClient } from '@aws-sdk/client-rds';
import { SFNClient } from '@aws-sdk/client-sfn';
import { SQSClient } from '@aws-sdk/client-sqs';
import { SSMClient } from '@aws-sdk/client-ssm';
import type { Context } from 'aws-lambda';
import { CloudWatchAlarms } from '../adapters/aws/cloudwatch-alarms';
import { RdsSnapshotBackup } from '../adapters/aws/rds-backup';
import { SfnExecutions } from '../adapters/aws/sfn-executions';
import { SqsDeadLetters } from '../adapters/aws/sqs-dead-letters';
import { SqsQueue } from '../adapters/aws/sqs-queue';
import { SsmParameters } from '../adapters/aws/ssm-parameters';
import { ConfigError, taskFailure } from '../core/errors';
import { orchestrate, type OrchestratorDeps } from '../core/orchestrator';
import { safeError } from '../core/safe-error';
import { LAMBDA_ENV, SERVICE_NAMES } from '../../lib/runtime-contract';
import { getRuntime } from './runtime';
import { invocation, lambdaTools } from './powertools';

const tools = lambdaTools(SERVICE_NAMES.orchestrator);
// Every AWS call of the tasks is a subsegment of the invocation's trace.
const traced = <C extends object>(client: C): C => tools.tracer.captureAWSv3Client(client);

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
    queue: new SqsQueue(traced(new SQSClient({})), queueUrl),
    ...(dlqUrl ? { deadLetters: new SqsDeadLetters(traced(new SQSClient({})), dlqUrl) } : {}),
    parameters: new SsmParameters(traced(new SSMClient({}))),
    executions: new SfnExecutions(traced(new SFNClient({}))),
    backup: instanceId
      ? new RdsSnapshotBackup(traced(new RDSClient({})), { instanceId })
      : clusterId
        ? new RdsSnapshotBackup(traced(new RDSClient({})), { clusterId })
        : undefined,
    alarms: alarmName
      ? new CloudWatchAlarms(traced(new CloudWatchClient({})), { compositeAlarmName: alarmName })
      : undefined,
    metric: (name, value) => tools.metrics.addMetric(name, MetricUnit.Count, value),
  };
  return deps;
}

/**
 * The state machines' Lambda task: one event names one task (validated), the core does it.
 * An error whose `retryable` is true is thrown as RetryableTaskError (what the states' Retry
 * matches, its message led by the original name, which the failure path records); any other
 * error under its own name (InvalidInputError, PhaseOrderError, MigrationLockedError, …), which
 * the states' Catch matches. Either leaves with its name, message and SQLSTATE only
 * (safe-error.ts): the log line and the Step Functions cause carry no row.
 */
export async function handler(event: unknown, context?: Context): Promise<Record<string, unknown>> {
  const task = (event as { task?: unknown })?.task;
  return invocation(tools, context, async () => {
    try {
      const result = await orchestrate(await awsDeps(), event);
      tools.logger.info('task done', { task });
      return result;
    } catch (error) {
      tools.logger.error('task failed', { task, error: safeError(error) });
      // A retryable error goes to Step Functions under the one name its Retry matches (and
      // leaves the invocation with its name, message and SQLSTATE only).
      throw taskFailure(error);
    }
  });
}
