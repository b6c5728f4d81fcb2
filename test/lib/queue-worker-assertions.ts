import type { Stack } from 'aws-cdk-lib';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { QueueWorkerOptions } from '../../lib/constructs/queue-worker';
import { DATABASE_ENVIRONMENT, networkStack, V1_SECRET_ARN, V2_SECRET_ARN } from './helpers';

/**
 * A stack with a VPC, and the props a queue worker (a pipeline) needs in it: both database
 * secrets and an environment naming the two hosts and secret ARNs.
 */
export function queueWorkerStack(): { stack: Stack; props: QueueWorkerOptions } {
  const { stack, vpc, securityGroup, vpcSubnets } = networkStack();
  const props: QueueWorkerOptions = {
    vpc,
    vpcSubnets,
    securityGroups: [securityGroup],
    databaseSecrets: [
      secretsmanager.Secret.fromSecretCompleteArn(stack, 'V1', V1_SECRET_ARN),
      secretsmanager.Secret.fromSecretCompleteArn(stack, 'V2', V2_SECRET_ARN),
    ],
    environment: {
      ...DATABASE_ENVIRONMENT,
    },
  };
  return { stack, props };
}

/** The ARN of the work queue (or its DLQ) of the queue worker with construct id `id`. */
export const queueArn = (id: string, queue: 'Queue' | 'DeadLetterQueue' = 'Queue') => ({
  'Fn::GetAtt': [Match.stringLikeRegexp(`^${id}${queue}[0-9A-F]{8}$`), 'Arn'],
});

/**
 * The queue hides messages for `visibilityTimeout` seconds and redrives to the DLQ after
 * `maxReceiveCount` receives; the DLQ keeps messages 14 days and redrives nowhere. Both use
 * SQS-managed encryption.
 */
export function expectRedrive(
  template: Template,
  id: string,
  expected: { visibilityTimeout: number; maxReceiveCount: number },
): void {
  template.hasResourceProperties('AWS::SQS::Queue', {
    VisibilityTimeout: expected.visibilityTimeout,
    SqsManagedSseEnabled: true,
    RedrivePolicy: Match.objectLike({
      maxReceiveCount: expected.maxReceiveCount,
      deadLetterTargetArn: queueArn(id, 'DeadLetterQueue'),
    }),
  });
  template.hasResourceProperties('AWS::SQS::Queue', {
    MessageRetentionPeriod: 1_209_600,
    SqsManagedSseEnabled: true,
    RedrivePolicy: Match.absent(),
  });
}

/** Both queues' policies deny any access without TLS. */
export function expectTlsOnly(template: Template, id: string): void {
  const denyInsecure = Match.arrayWith([
    Match.objectLike({
      Effect: 'Deny',
      Action: 'sqs:*',
      Condition: { Bool: { 'aws:SecureTransport': 'false' } },
    }),
  ]);
  for (const queue of [`${id}Queue`, `${id}DeadLetterQueue`]) {
    template.hasResourceProperties('AWS::SQS::QueuePolicy', {
      PolicyDocument: { Statement: denyInsecure },
      Queues: [{ Ref: Match.stringLikeRegexp(`^${queue}[0-9A-F]{8}$`) }],
    });
  }
}

/** The queue feeds the worker with partial batch responses, bounded concurrency and this batch size. */
export function expectEventSource(
  template: Template,
  id: string,
  expected: { maxConcurrency: number; batchSize: number },
): void {
  template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
    EventSourceArn: queueArn(id),
    FunctionResponseTypes: ['ReportBatchItemFailures'],
    ScalingConfig: { MaximumConcurrency: expected.maxConcurrency },
    BatchSize: expected.batchSize,
  });
}

/** The worker's role may read exactly the two database secrets and consume its queue. */
export function expectWorkerPermissions(template: Template, id: string): void {
  template.hasResourceProperties('AWS::IAM::Policy', {
    Roles: [{ Ref: Match.stringLikeRegexp(`^${id}Worker(Function)?Role`) }],
    PolicyDocument: {
      Statement: Match.arrayWith([
        {
          Effect: 'Allow',
          Action: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'],
          Resource: V1_SECRET_ARN,
        },
        {
          Effect: 'Allow',
          Action: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'],
          Resource: V2_SECRET_ARN,
        },
        Match.objectLike({
          Action: Match.arrayWith(['sqs:ReceiveMessage', 'sqs:DeleteMessage']),
          Resource: queueArn(id),
        }),
      ]),
    },
  });
}
