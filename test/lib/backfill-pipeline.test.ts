import { Duration } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { BackfillPipeline, type BackfillPipelineProps } from '../../lib/constructs/backfill-pipeline';
import { LAMBDA_ENV } from '../../lib/runtime-contract';
import { V1_SECRET_ARN, V2_SECRET_ARN } from './helpers';
import {
  expectEventSource,
  expectRedrive,
  expectTlsOnly,
  expectWorkerPermissions,
  queueWorkerStack,
} from './queue-worker-assertions';

function pipeline(overrides: Partial<BackfillPipelineProps> = {}) {
  const { stack, props } = queueWorkerStack();
  const construct = new BackfillPipeline(stack, 'Backfill', { ...props, ...overrides });
  return { stack, construct };
}

describe('BackfillPipeline', () => {
  let template: Template;
  beforeAll(() => {
    template = Template.fromStack(pipeline({ maxConcurrency: 4, maxReceiveCount: 7 }).stack);
  });

  it('redrives to the DLQ after maxReceiveCount and hides messages for 6× the worker timeout', () => {
    expectRedrive(template, 'Backfill', { visibilityTimeout: 1800, maxReceiveCount: 7 });
  });

  it('denies non-TLS access to both queues', () => {
    expectTlsOnly(template, 'Backfill');
  });

  it('maps the queue to the worker with partial batch responses and bounded concurrency', () => {
    expectEventSource(template, 'Backfill', { maxConcurrency: 4, batchSize: 1 });
  });

  it('runs the worker on Node.js 22, ARM64, traced, in the VPC', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'nodejs22.x',
      Architectures: ['arm64'],
      TracingConfig: { Mode: 'Active' },
      Timeout: 300,
      VpcConfig: Match.objectLike({
        SecurityGroupIds: [{ 'Fn::GetAtt': [Match.stringLikeRegexp('^Sg'), 'GroupId'] }],
        SubnetIds: Match.anyValue(),
      }),
      Environment: {
        Variables: Match.objectLike({
          MIGRATION_SQL_DIR: '/var/task/sql',
          NODE_EXTRA_CA_CERTS: Match.anyValue(),
        }),
      },
    });
  });

  it('gives the worker secret ARNs in its environment, never a secret value', () => {
    const [fn] = Object.values(template.findResources('AWS::Lambda::Function'));
    const variables = fn.Properties.Environment.Variables as Record<string, unknown>;

    const secretish = Object.keys(variables).filter((name) => /SECRET|PASSWORD|URL/i.test(name));
    expect(secretish.sort()).toEqual([LAMBDA_ENV.v1SecretArn, LAMBDA_ENV.v2SecretArn]);
    expect(variables[LAMBDA_ENV.v1SecretArn]).toBe(V1_SECRET_ARN);
    expect(variables[LAMBDA_ENV.v2SecretArn]).toBe(V2_SECRET_ARN);
  });

  it('lets the worker read exactly its two secrets and consume only its queue', () => {
    expectWorkerPermissions(template, 'Backfill');
  });
});

describe('BackfillPipeline synth-time checks', () => {
  it('refuses a visibility timeout shorter than 6× the worker timeout, naming field and path', () => {
    expect(() =>
      pipeline({ workerTimeout: Duration.minutes(5), visibilityTimeout: Duration.minutes(10) }),
    ).toThrow(
      /TestStack\/Backfill: visibilityTimeout \(600 s\) must be at least 6 × workerTimeout \(300 s\) = 1800 s, so a message is not redelivered while a worker \(/,
    );
  });

  it('refuses a maximum concurrency below 2, naming field and path', () => {
    expect(() => pipeline({ maxConcurrency: 1 })).toThrow(/TestStack\/Backfill: maxConcurrency/);
  });

  it('refuses an environment variable that would carry a secret', () => {
    expect(() => pipeline({ environment: { V1_DATABASE_URL: 'postgres://u:p@h/db' } })).toThrow(
      /Backfill\/Worker: environment\.V1_DATABASE_URL looks like a secret/,
    );
  });
});
