import { CloudWatchClient, DescribeAlarmsCommand } from '@aws-sdk/client-cloudwatch';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SQSClient } from '@aws-sdk/client-sqs';
import { SSMClient } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { CONFIG_ENV } from '../../../lambdas/core/config';
import { RETRYABLE_TASK_ERROR } from '../../../lambdas/core/errors';
import { LAMBDA_ENV } from '../../../lib/runtime-contract';
import { answerAwsCalls, endLambdaRuntime, lambdaEnvironment, secretArn } from '../../support/aws-boundary';
import { freshDatabases, type TestDatabases } from '../../support/pg';
import { seedV1 } from '../../support/fixtures';

const secrets = mockClient(SecretsManagerClient);
const ssm = mockClient(SSMClient);
const sqs = mockClient(SQSClient);
const cloudwatch = mockClient(CloudWatchClient);

describe('the orchestrator Lambda handler, wired to AWS SDK clients (mocked) and real PostgreSQL', () => {
  let dbs: TestDatabases;
  let handler: (event: unknown) => Promise<Record<string, unknown>>;
  const saved = { ...process.env };
  const stored = new Map<string, string>([['/iot-migration/v2-traffic-percentage', '0']]);

  beforeAll(async () => {
    dbs = await freshDatabases('handler');
    await seedV1(dbs.v1, { devices: 3, telemetry: 10 });
    answerAwsCalls({ secrets, ssm, sqs }, dbs, stored);
    Object.assign(process.env, lambdaEnvironment(dbs), {
      [LAMBDA_ENV.healthAlarmName]: 'MigrationHealth',
      [CONFIG_ENV.cutoverSchedule]: JSON.stringify([
        { percentage: 50, bakeSeconds: 60 },
        { percentage: 100, bakeSeconds: 60 },
      ]),
    });
    ({ handler } = await import('../../../lambdas/handlers/orchestrator'));
  });
  afterAll(async () => {
    await endLambdaRuntime(saved);
    await dbs.drop();
  });

  it('validates execution input and names what is wrong', async () => {
    await expect(
      handler({ task: 'validate-migration-input', input: { action: 'advance', through: 'verify' } }),
    ).resolves.toEqual({
      action: 'advance',
      through: 'VERIFY',
    });
    await expect(
      handler({ task: 'validate-migration-input', input: { action: 'advance', through: 'LAUNCH' } }),
    ).rejects.toMatchObject({
      name: 'InvalidInputError',
      message: expect.stringMatching(/through/),
    });
    await expect(handler({ task: 'no-such-task' })).rejects.toMatchObject({ name: 'InvalidInputError' });
  });

  it('takes the lock and runs Phase 1 with credentials from Secrets Manager, the parameters from SSM', async () => {
    const actor = 'arn:aws:states:eu-west-1:123456789012:execution:Migration:one';
    await expect(handler({ task: 'begin', actor, request: { action: 'advance' } })).resolves.toEqual({
      target: 'PREPARE',
    });
    await expect(
      handler({
        task: 'begin',
        actor: 'arn:aws:states:eu-west-1:123456789012:execution:Migration:two',
        request: { action: 'advance' },
      }),
    ).rejects.toMatchObject({
      name: 'MigrationLockedError',
    });
    // The Lambda has no backup port configured (no RDS instance or cluster): a named refusal.
    await expect(handler({ task: 'prepare', actor })).rejects.toMatchObject({
      name: 'BackupError',
      message: expect.stringMatching(/snapshot.rdsInstanceId/),
    });
    await handler({ task: 'release', actor });
    const status = await handler({ task: 'status', actor });
    expect(status).toMatchObject({ trafficPercentage: '0' });
    expect(
      secrets
        .commandCalls(GetSecretValueCommand)
        .map((c) => c.args[0].input.SecretId)
        .sort(),
    ).toEqual([secretArn('v1'), secretArn('v2')]);
    // The cutover schedule reached the Lambda's config from its environment.
    const config = (await (await import('../../../lambdas/handlers/runtime')).getRuntime()).config;
    expect(config.cutover.schedule).toEqual([
      { percentage: 50, bakeSeconds: 60 },
      { percentage: 100, bakeSeconds: 60 },
    ]);
  });

  it("throws a retryable error under the name the states' Retry matches, any other under its own", async () => {
    const actor = 'arn:aws:states:eu-west-1:123456789012:execution:Cutover:gate';
    cloudwatch
      .on(DescribeAlarmsCommand)
      .rejectsOnce(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' }))
      .rejectsOnce(Object.assign(new Error('not authorized'), { name: 'AccessDeniedException' }));
    // The gate is a task of a cutover under way, run by the lock's holder (task-guards.ts).
    await handler({ task: 'begin', actor, request: { action: 'advance' } });
    await dbs.v2.query(
      `INSERT INTO migration_control.phase_runs (phase, status, actor) VALUES ('CUTOVER', 'running', $1)`,
      [actor],
    );
    const throttled = await handler({ task: 'health-gate', actor }).catch((e: unknown) => e);
    expect(throttled).toMatchObject({
      name: RETRYABLE_TASK_ERROR,
      message: expect.stringMatching(
        /^AlarmLookupError: Cannot read the alarms MigrationHealth: .*ThrottlingException/,
      ),
    });
    const denied = await handler({ task: 'health-gate', actor }).catch((e: unknown) => e);
    expect(denied).toMatchObject({
      name: 'AlarmLookupError',
      retryable: false,
      message: expect.stringMatching(/AccessDeniedException/),
    });
    expect(cloudwatch.commandCalls(DescribeAlarmsCommand)).toHaveLength(2);
    // What the failure path records once the retries are spent: the original name and message.
    await expect(
      handler({
        task: 'record-failure',
        actor,
        error: {
          Error: RETRYABLE_TASK_ERROR,
          Cause: JSON.stringify({
            errorType: RETRYABLE_TASK_ERROR,
            errorMessage: (throttled as Error).message,
          }),
        },
      }),
    ).resolves.toEqual({
      Error: 'AlarmLookupError',
      Cause: expect.stringMatching(/^Cannot read the alarms MigrationHealth: .*ThrottlingException/),
    });
  });
});
