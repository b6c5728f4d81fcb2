import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { GetParameterCommand, PutParameterCommand, type SSMClient } from '@aws-sdk/client-ssm';
import type { AwsClientStub } from 'aws-sdk-client-mock';
import { LAMBDA_ENV } from '../../lib/runtime-contract';
import { testServer } from './pg';

/** A database secret's ARN (`v1` or `v2` in its name tells which database it opens). */
export const secretArn = (name: string) =>
  `arn:aws:secretsmanager:eu-west-1:123456789012:secret:${name}-AbCdEf`;

/** The worker queue's URL in the Lambdas' environment. */
export const WORKER_QUEUE_URL = 'https://sqs.eu-west-1.amazonaws.com/123456789012/work';

/** The AWS SDK clients the Lambdas call, mocked at the SDK boundary (aws-sdk-client-mock). */
export interface AwsMocks {
  secrets: AwsClientStub<SecretsManagerClient>;
  ssm: AwsClientStub<SSMClient>;
  sqs: AwsClientStub<SQSClient>;
}

/**
 * Answers the Lambdas' AWS calls from the test databases: a database secret holds the test
 * server's credentials and its database (V1 for a secret whose id says `v1`); SSM parameters are
 * read from and written to `stored` (an absent one is ParameterNotFound); SQS accepts every body
 * sent, recorded in `sent`.
 */
export function answerAwsCalls(
  mocks: AwsMocks,
  dbs: { v1Name: string; v2Name: string },
  stored: Map<string, string>,
  sent: string[] = [],
): void {
  const { port, user, password } = testServer();
  mocks.secrets.on(GetSecretValueCommand).callsFake((input: { SecretId: string }) => ({
    SecretString: JSON.stringify({
      username: user,
      password,
      host: '127.0.0.1',
      port,
      dbname: input.SecretId.includes('v1') ? dbs.v1Name : dbs.v2Name,
    }),
  }));
  mocks.ssm.on(GetParameterCommand).callsFake((input: { Name: string }) => {
    const value = stored.get(input.Name);
    if (value === undefined) throw Object.assign(new Error('not found'), { name: 'ParameterNotFound' });
    return { Parameter: { Name: input.Name, Value: value } };
  });
  mocks.ssm.on(PutParameterCommand).callsFake((input: { Name: string; Value: string }) => {
    stored.set(input.Name, input.Value);
    return {};
  });
  mocks.sqs
    .on(SendMessageBatchCommand)
    .callsFake((input: { Entries: { Id: string; MessageBody: string }[] }) => {
      sent.push(...input.Entries.map((e) => e.MessageBody));
      return {
        Successful: input.Entries.map((e) => ({ Id: e.Id, MessageId: e.Id, MD5OfMessageBody: '' })),
        Failed: [],
      };
    });
}

/**
 * The environment the stack gives the Lambdas, on the test databases (secrets by ARN, no TLS
 * locally) and a fake region with fake credentials (every AWS call is mocked).
 */
export function lambdaEnvironment(dbs: { v1Name: string; v2Name: string }): Record<string, string> {
  return {
    [LAMBDA_ENV.v1Host]: '127.0.0.1',
    [LAMBDA_ENV.v1Database]: dbs.v1Name,
    [LAMBDA_ENV.v1SecretArn]: secretArn('v1'),
    [LAMBDA_ENV.v2Host]: '127.0.0.1',
    [LAMBDA_ENV.v2Database]: dbs.v2Name,
    [LAMBDA_ENV.v2SecretArn]: secretArn('v2'),
    [LAMBDA_ENV.dbSsl]: 'false',
    [LAMBDA_ENV.workerQueueUrl]: WORKER_QUEUE_URL,
    AWS_REGION: 'eu-west-1',
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
  };
}

/**
 * Ends the pools of the Lambdas' runtime (what a test's handlers opened, once per module
 * registry) and puts `saved` back as the process environment.
 */
export async function endLambdaRuntime(saved: NodeJS.ProcessEnv): Promise<void> {
  process.env = saved;
  const runtime = await (await import('../../lambdas/handlers/runtime')).getRuntime();
  await Promise.all([runtime.v1.end(), runtime.v2.end()]);
}
