import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SQSClient } from '@aws-sdk/client-sqs';
import { SSMClient } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import { CONFIG_ENV } from '../../../lambdas/core/config';
import { prepareStep } from '../../../lambdas/core/phases';
import { seedV1, testConfig } from '../../support/fixtures';
import { testBackup } from '../../support/migration';
import { answerAwsCalls, endLambdaRuntime, lambdaEnvironment } from '../../support/aws-boundary';
import { freshDatabases, type TestDatabases } from '../../support/pg';

/**
 * A constraint violation on a row holding a secret-looking value, through the real Lambda
 * handlers (AWS SDK clients mocked, real PostgreSQL): PostgreSQL puts the whole row in the
 * error's detail ("Failing row contains (…)"), yet the value appears in no log line, in no
 * error the handlers throw (what Step Functions shows as the cause), and in no failure text
 * the control schema keeps.
 */

const secrets = mockClient(SecretsManagerClient);
const ssm = mockClient(SSMClient);
const sqs = mockClient(SQSClient);

const SECRET = 'api_key=sk_live_TOPSECRET_51HxQ8r0wValue';
const ACTOR = 'arn:aws:states:eu-west-1:123456789012:execution:Migration:leaky-row';

describe('no row data leaves through the logs or the Step Functions cause', () => {
  let dbs: TestDatabases;
  const output: string[] = [];
  const sent: string[] = [];
  const stored = new Map<string, string>([
    ['/iot-migration/v2-traffic-percentage', '0'],
    ['/iot-migration/dual-write', 'off'],
  ]);
  const saved = { ...process.env };
  let orchestrator: (event: unknown) => Promise<Record<string, unknown>>;
  let worker: (event: unknown) => Promise<{ batchItemFailures: { itemIdentifier: string }[] }>;

  beforeAll(async () => {
    dbs = await freshDatabases('safelogs');
    await seedV1(dbs.v1, { devices: 3, telemetry: 30, seed: 2 });
    const alert = await dbs.v1.query<{ id: string }>(
      `UPDATE alerts SET message = $1 WHERE id = (SELECT min(id) FROM alerts) RETURNING id`,
      [SECRET],
    );
    expect(alert.rows).toHaveLength(1);
    // Phase 1 as the rehearsal runs it (the Lambda has no snapshot configured here).
    const config = testConfig(dbs);
    await prepareStep({
      v1: dbs.v1,
      v2: dbs.v2,
      config,
      parameters: new MemoryParameters(),
      backup: testBackup(dbs),
      actor: ACTOR,
    });
    // V2 refuses the row: PostgreSQL's error detail will hold the whole row, secret included.
    await dbs.v2.query(`ALTER TABLE alerts ADD CONSTRAINT no_keys CHECK (message NOT LIKE '%sk_live_%')`);

    answerAwsCalls({ secrets, ssm, sqs: sqs }, dbs, stored, sent);
    Object.assign(process.env, lambdaEnvironment(dbs), {
      // The first failed delivery is the last: the window is marked failed at once.
      [CONFIG_ENV.maxReceiveCount]: '1',
    });
    // Every line the handlers print (Powertools writes to stdout and stderr).
    for (const stream of [process.stdout, process.stderr]) {
      jest.spyOn(stream, 'write').mockImplementation((chunk: string | Uint8Array) => {
        output.push(String(chunk));
        return true;
      });
    }
    ({ handler: orchestrator } = await import('../../../lambdas/handlers/orchestrator'));
    ({ handler: worker } = await import('../../../lambdas/handlers/backfill-worker'));
  });
  afterAll(async () => {
    jest.restoreAllMocks();
    await endLambdaRuntime(saved);
    await dbs.drop();
  });

  /** Delivers every message sent so far to the worker handler, once. */
  async function deliver(): Promise<string[]> {
    const bodies = sent.splice(0);
    const result = await worker({
      Records: bodies.map((body, i) => ({
        messageId: `m-${i}-${body}`,
        receiptHandle: `r-${i}`,
        body,
        attributes: { ApproximateReceiveCount: '1' },
        messageAttributes: {},
        md5OfBody: '',
        eventSource: 'aws:sqs',
        eventSourceARN: 'arn:aws:sqs:eu-west-1:123456789012:work',
        awsRegion: 'eu-west-1',
      })),
    });
    return result.batchItemFailures.map((f) => f.itemIdentifier);
  }

  it('copies what V2 accepts, fails the window V2 refuses, and says why without the row', async () => {
    await orchestrator({ task: 'begin', actor: ACTOR, request: {} });
    await orchestrator({ task: 'start-backfill', actor: ACTOR });
    const failures: string[] = [];
    let thrown: unknown;
    for (let round = 0; round < 10 && thrown === undefined; round++) {
      failures.push(...(await deliver()));
      thrown = await orchestrator({ task: 'poll-backfill', actor: ACTOR }).then(
        () => undefined,
        (e: unknown) => e,
      );
    }
    // One alerts window failed for good; the phase fails naming it, by name.
    expect(failures).toHaveLength(1);
    expect(thrown).toMatchObject({
      name: 'BackfillFailedError',
      message: expect.stringMatching(/alerts window/),
    });
    const error = thrown as Error;
    // What Step Functions shows as the cause: the runtime's errorType, errorMessage and trace.
    const cause = JSON.stringify({ errorType: error.name, errorMessage: error.message, trace: error.stack });
    expect(error.message).toMatch(/violates check constraint "no_keys"/);
    expect(cause).not.toContain('sk_live_');

    const logs = output.join('');
    // The worker logged the failure: its name, message and SQLSTATE.
    const failed = logs
      .split('\n')
      .filter((line) => line.includes('"window failed"'))
      .map((line) => JSON.parse(line) as { error: Record<string, unknown> });
    expect(failed).toHaveLength(1);
    expect(failed[0].error).toEqual({
      name: 'UnmappableRowError',
      message: expect.stringMatching(
        /^V1 row alerts\.id=\S+ of alerts \(window \d+\) cannot be mapped to V2: new row for relation "alerts" violates check constraint "no_keys"$/,
      ),
      code: '23514',
      retryable: false,
    });
    expect(logs).toMatch(/"task failed"/);
    expect(logs).not.toContain('sk_live_');

    // Nor does the text the control schema keeps (status, reports).
    const kept = await dbs.v2.query(
      `SELECT (SELECT string_agg(coalesce(last_error, ''), '|') FROM migration_control.windows) AS windows,
              (SELECT string_agg(coalesce(error, ''), '|') FROM migration_control.phase_runs) AS phases,
              (SELECT string_agg(details::text, '|') FROM migration_control.audit_log) AS audit`,
    );
    expect(JSON.stringify(kept.rows[0])).toMatch(/no_keys/);
    expect(JSON.stringify(kept.rows[0])).not.toContain('sk_live_');
  });
});
