import {
  CreateDBSnapshotCommand,
  DescribeDBInstancesCommand,
  DescribeDBSnapshotsCommand,
  RDSClient,
} from '@aws-sdk/client-rds';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SQSClient } from '@aws-sdk/client-sqs';
import { SSMClient } from '@aws-sdk/client-ssm';
import { Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { CONFIG_ENV, type MigrationConfig } from '../../../lambdas/core/config';
import { repairMessage } from '../../../lambdas/core/sync/repair';
import type { BatchResult } from '../../../lambdas/ports/queue';
import { MigrationDashboard } from '../../../lib/constructs/dashboard';
import { LAMBDA_ENV, METRIC_NAMES, METRICS_NAMESPACE, SERVICE_NAMES } from '../../../lib/runtime-contract';
import { seedV1, testConfig } from '../../support/fixtures';
import { expectAllInSync } from '../../support/in-sync';
import {
  lambdaContext,
  metricSum,
  sqsEvent,
  StdoutCapture,
  type PublishedMetric,
} from '../../support/lambda';
import { answerAwsCalls, endLambdaRuntime, lambdaEnvironment } from '../../support/aws-boundary';
import { freshDatabases, type TestDatabases } from '../../support/pg';
import { appWithoutBundling } from '../../lib/helpers';

const secrets = mockClient(SecretsManagerClient);
const ssm = mockClient(SSMClient);
const sqsClient = mockClient(SQSClient);
const rds = mockClient(RDSClient);

const ACTOR = 'arn:aws:states:eu-west-1:123456789012:execution:Migration:lambdas';
/** Lambda's SQS event source delivers at most this many records per invocation (queue-worker). */
const BATCH = 10;

type Handler<R> = (event: unknown, context?: Context) => Promise<R>;

/**
 * The three Lambdas as AWS runs them, on real PostgreSQL: the orchestrator (its SQS and SSM calls
 * mocked at the SDK), and the backfill and repair workers invoked with the SQS events that carry
 * exactly what the orchestrator sent. What they write to stdout is what CloudWatch receives: the
 * log lines (each with the request id) and the EMF metrics the dashboard and alarms read.
 */
describe('the Lambdas end to end: orchestrator → SQS → workers, their logs and metrics', () => {
  let dbs: TestDatabases;
  let config: MigrationConfig;
  let orchestrator: Handler<Record<string, unknown>>;
  let worker: Handler<BatchResult>;
  let repair: Handler<BatchResult>;
  const saved = { ...process.env };
  const stored = new Map<string, string>([['/iot-migration/v2-traffic-percentage', '0']]);
  /** Bodies the orchestrator sent to the worker queue, not yet delivered. */
  const sent: string[] = [];
  const capture = new StdoutCapture();
  const published = () => StdoutCapture.metrics(capture.lines);

  /** One invocation with its own request id: its result, and the log lines it wrote. */
  async function invoke<R>(handler: Handler<R>, functionName: string, event: unknown) {
    const context = lambdaContext(functionName);
    const from = capture.lines.length;
    const settle = async () => {
      const logs = StdoutCapture.logs(capture.since(from));
      // Every log line of the invocation carries its request id (Logger with the Lambda context).
      expect(logs.map((l) => l.function_request_id)).toEqual(logs.map(() => context.awsRequestId));
      return { logs, metrics: StdoutCapture.metrics(capture.since(from)) };
    };
    try {
      const result = await handler(event, context);
      return { result, ...(await settle()) };
    } catch (error) {
      await settle();
      throw error;
    }
  }

  /** Delivers every sent body to the backfill worker, BATCH records an SQS event. */
  async function deliverSent(): Promise<number> {
    let delivered = 0;
    while (sent.length > 0) {
      const bodies = sent.splice(0, BATCH);
      const { result, logs } = await invoke(worker, 'backfill-worker', sqsEvent(bodies));
      expect(result).toEqual({ batchItemFailures: [] });
      expect(logs.filter((l) => l.message === 'work done')).toHaveLength(bodies.length);
      delivered += bodies.length;
    }
    return delivered;
  }

  beforeAll(async () => {
    dbs = await freshDatabases('lambdas');
    await seedV1(dbs.v1, { devices: 8, telemetry: 2500, seed: 13 });
    config = testConfig(dbs, { batch: { telemetryWindowRows: 1000 } });
    answerAwsCalls({ secrets, ssm, sqs: sqsClient }, dbs, stored, sent);
    // Phase 1's snapshot of the V1 instance, available at once.
    const snapshot = (id: string) => ({
      DBSnapshotIdentifier: id,
      DBSnapshotArn: `arn:aws:rds:eu-west-1:123456789012:snapshot:${id}`,
      DBInstanceIdentifier: 'iot-v1',
      Status: 'available',
      SnapshotCreateTime: new Date(),
      Engine: 'postgres',
      AllocatedStorage: 20,
      PercentProgress: 100,
      Encrypted: true,
    });
    rds.on(CreateDBSnapshotCommand).callsFake((input: { DBSnapshotIdentifier: string }) => ({
      DBSnapshot: { ...snapshot(input.DBSnapshotIdentifier), Status: 'creating' },
    }));
    rds.on(DescribeDBSnapshotsCommand).callsFake((input: { DBSnapshotIdentifier: string }) => ({
      DBSnapshots: [snapshot(input.DBSnapshotIdentifier)],
    }));
    rds.on(DescribeDBInstancesCommand).resolves({ DBInstances: [{ StorageEncrypted: true }] });
    Object.assign(process.env, lambdaEnvironment(dbs), {
      [LAMBDA_ENV.rdsInstanceId]: 'iot-v1',
      [CONFIG_ENV.telemetryWindowRows]: '1000',
    });
    ({ handler: orchestrator } = await import('../../../lambdas/handlers/orchestrator'));
    ({ handler: worker } = await import('../../../lambdas/handlers/backfill-worker'));
    ({ handler: repair } = await import('../../../lambdas/handlers/repair-worker'));
    capture.start();
  });
  afterAll(async () => {
    capture.stop();
    await endLambdaRuntime(saved);
    await dbs.drop();
  });

  /** One execution's `begin`, as the Migration state machine starts it. */
  async function begin(expected: string): Promise<void> {
    const begun = await invoke(orchestrator, 'orchestrator', {
      task: 'begin',
      actor: ACTOR,
      request: { action: 'advance' },
    });
    expect(begun.result).toEqual({ target: expected });
  }
  const release = () => invoke(orchestrator, 'orchestrator', { task: 'release', actor: ACTOR });

  it('Phase 1: the orchestrator snapshots V1 (RDS) and deploys V2', async () => {
    await begin('PREPARE');
    const { result } = await invoke(orchestrator, 'orchestrator', { task: 'prepare', actor: ACTOR });
    expect(result).toMatchObject({ storage: expect.any(String) });
    expect(rds.commandCalls(CreateDBSnapshotCommand)[0].args[0].input).toMatchObject({
      DBInstanceIdentifier: 'iot-v1',
    });
    await release();
  });

  it('Phase 2: the windows the orchestrator sends are copied by the backfill worker from their SQS events', async () => {
    await begin('BACKFILL');
    let progress = (await invoke(orchestrator, 'orchestrator', { task: 'start-backfill', actor: ACTOR }))
      .result;
    let delivered = 0;
    // Each round delivers what was sent, then polls: the next stage is sent once one is done.
    for (let round = 0; round < 10 && progress.complete !== true; round++) {
      delivered += await deliverSent();
      progress = (await invoke(orchestrator, 'orchestrator', { task: 'poll-backfill', actor: ACTOR })).result;
    }
    expect(progress).toMatchObject({ complete: true, windowsFailed: 0 });
    expect(delivered).toBe(progress.windowsTotal);
    expect(Number(progress.windowsTotal)).toBeGreaterThan(4);
    await expectAllInSync(dbs, config);

    const v1Rows = (
      await dbs.v1.query<{ n: number }>(
        `SELECT ((SELECT count(*) FROM users) + (SELECT count(*) FROM devices)
               + (SELECT count(*) FROM device_data) + (SELECT count(*) FROM alerts))::int AS n`,
      )
    ).rows[0].n;
    const metrics = published();
    expect(metricSum(metrics, METRIC_NAMES.windowsCopied, SERVICE_NAMES.worker)).toBe(delivered);
    expect(metricSum(metrics, METRIC_NAMES.rowsCopied, SERVICE_NAMES.worker)).toBe(v1Rows);
    expect(metricSum(metrics, METRIC_NAMES.windowFailed)).toBe(0);
    for (const m of metrics.filter((x) => x.name === METRIC_NAMES.windowsCopied)) {
      expect(m).toMatchObject({
        namespace: METRICS_NAMESPACE,
        dimensions: { service: SERVICE_NAMES.worker },
      });
    }
  });

  it('a bad record fails alone and is counted; a batch of bad records is reported, not thrown; a non-SQS event fails the invocation', async () => {
    const good = JSON.stringify({ type: 'copy-window', windowId: 1 });
    const event = sqsEvent([good, 'garbage', good]);
    const { result, logs, metrics } = await invoke(worker, 'backfill-worker', event);
    expect(result).toEqual({ batchItemFailures: [{ itemIdentifier: event.Records[1].messageId }] });
    expect(metricSum(metrics, METRIC_NAMES.windowFailed, SERVICE_NAMES.worker)).toBe(1);
    expect(metricSum(metrics, METRIC_NAMES.windowsCopied, SERVICE_NAMES.worker)).toBe(2);
    expect(logs.find((l) => l.level === 'ERROR')).toMatchObject({
      message: 'window failed',
      messageId: event.Records[1].messageId,
      receiveCount: 1,
      error: expect.objectContaining({ name: 'InvalidMessageError' }),
    });

    // Every record failed: still a partial batch response, so the invocation itself succeeds and
    // the WorkerErrors alarm (Lambda Errors) counts only invocations that fail as a whole.
    const bad = sqsEvent(['garbage', '{"type":"copy-window","windowId":999999}'], 3);
    const all = await invoke(worker, 'backfill-worker', bad);
    expect(all.result).toEqual({
      batchItemFailures: bad.Records.map((r) => ({ itemIdentifier: r.messageId })),
    });
    expect(metricSum(all.metrics, METRIC_NAMES.windowFailed, SERVICE_NAMES.worker)).toBe(2);

    await expect(invoke(worker, 'backfill-worker', { Records: [{ body: 'x' }] })).rejects.toMatchObject({
      name: 'InvalidInputError',
    });
    await expect(invoke(repair, 'repair-worker', { detail: 'not sqs' })).rejects.toMatchObject({
      name: 'InvalidInputError',
    });
  });

  it('Phase 3: verification slices from SQS events, then the mismatch count is published', async () => {
    await begin('VERIFY');
    const started = await invoke(orchestrator, 'orchestrator', { task: 'start-verify', actor: ACTOR });
    const { runId, slices } = started.result as { runId: number; slices: number };
    expect(slices).toBeGreaterThan(0);
    expect(await deliverSent()).toBe(slices);
    const polled = await invoke(orchestrator, 'orchestrator', { task: 'poll-verify', actor: ACTOR, runId });
    expect(polled.result).toMatchObject({ complete: true, clean: true });
    expect(polled.metrics).toEqual([
      expect.objectContaining({
        namespace: METRICS_NAMESPACE,
        name: METRIC_NAMES.verificationMismatchedWindows,
        dimensions: { service: SERVICE_NAMES.orchestrator },
        value: 0,
      }),
    ]);
    await release();
  });

  it('the repair worker re-syncs the rows its SQS messages name, and counts repairs and failures', async () => {
    const user = (await dbs.v1.query<{ id: string }>('SELECT id FROM users ORDER BY id LIMIT 1')).rows[0].id;
    const alert = (await dbs.v1.query<{ id: string }>('SELECT id FROM alerts ORDER BY id LIMIT 1')).rows[0]
      .id;
    // Writes whose V2 half failed: V1 has them, V2 does not.
    await dbs.v1.query(`UPDATE users SET name = 'Repaired by the worker' WHERE id = $1`, [user]);
    await dbs.v1.query('DELETE FROM alerts WHERE id = $1', [alert]);
    const event = sqsEvent([repairMessage('users', user), 'not a repair', repairMessage('alerts', alert)]);
    const { result, logs, metrics } = await invoke(repair, 'repair-worker', event);
    expect(result).toEqual({ batchItemFailures: [{ itemIdentifier: event.Records[1].messageId }] });
    expect(metricSum(metrics, METRIC_NAMES.rowsRepaired, SERVICE_NAMES.repairWorker)).toBe(2);
    expect(metricSum(metrics, METRIC_NAMES.repairFailed, SERVICE_NAMES.repairWorker)).toBe(1);
    expect(logs.filter((l) => l.message === 'row repaired').map((l) => l.action)).toEqual([
      'upserted',
      'deleted',
    ]);
    await expectAllInSync(dbs, config);
  });

  it('a rollback publishes the traffic percentage it set', async () => {
    const { result, metrics } = await invoke(orchestrator, 'orchestrator', {
      task: 'rollback',
      actor: ACTOR,
      request: { reason: 'end-to-end test' },
    });
    expect(result).toBeDefined();
    expect(stored.get('/iot-migration/v2-traffic-percentage')).toBe('0');
    expect(metrics).toContainEqual({
      namespace: METRICS_NAMESPACE,
      name: METRIC_NAMES.trafficPercentage,
      dimensions: { service: SERVICE_NAMES.orchestrator },
      value: 0,
    });
  });

  it("the dashboard's widgets name only metrics these Lambdas published (or AWS publishes)", () => {
    const stack = new Stack(appWithoutBundling(), 'DashboardStack');
    const queue = (id: string) => new sqs.Queue(stack, id);
    new MigrationDashboard(stack, 'Dashboard', {
      queue: queue('Work'),
      deadLetterQueue: queue('WorkDlq'),
      repair: { queue: queue('Repair'), deadLetterQueue: queue('RepairDlq') },
      alarms: [
        new cloudwatch.Alarm(stack, 'Alarm', {
          metric: new cloudwatch.Metric({ namespace: 'Test', metricName: 'Test' }),
          threshold: 1,
          evaluationPeriods: 1,
        }),
      ],
    });
    const named = dashboardMetrics(Template.fromStack(stack));
    const custom = named.filter((m) => m.namespace === METRICS_NAMESPACE);
    expect(custom.length).toBeGreaterThanOrEqual(7);
    const seen = new Set(published().map(metricKey));
    expect(custom.map(metricKey).filter((key) => !seen.has(key))).toEqual([]);
    // The rest are the queues' own metrics, which SQS publishes.
    expect([
      ...new Set(named.filter((m) => m.namespace !== METRICS_NAMESPACE).map((m) => m.namespace)),
    ]).toEqual(['AWS/SQS']);
  });
});

const metricKey = (m: Pick<PublishedMetric, 'namespace' | 'name' | 'dimensions'>) =>
  `${m.namespace}/${m.name}/${JSON.stringify(Object.entries(m.dimensions).sort())}`;

/** Every metric a synthesized dashboard's widgets name (tokens of queue names left as placeholders). */
function dashboardMetrics(template: Template): Pick<PublishedMetric, 'namespace' | 'name' | 'dimensions'>[] {
  const [dashboard] = Object.values(template.findResources('AWS::CloudWatch::Dashboard')) as {
    Properties: { DashboardBody: unknown };
  }[];
  const body = dashboard.Properties.DashboardBody as string | { 'Fn::Join': [string, unknown[]] };
  const text =
    typeof body === 'string'
      ? body
      : body['Fn::Join'][1].map((part) => (typeof part === 'string' ? part : 'TOKEN')).join('');
  const widgets = (JSON.parse(text) as { widgets: { properties: { metrics?: unknown[][] } }[] }).widgets;
  const out: Pick<PublishedMetric, 'namespace' | 'name' | 'dimensions'>[] = [];
  for (const widget of widgets) {
    for (const metric of widget.properties.metrics ?? []) {
      const parts = metric.filter((p) => typeof p === 'string') as string[];
      if (parts.length < 2) continue; // a math expression: its inputs are listed on their own
      const [namespace, name, ...dims] = parts;
      const dimensions: Record<string, string> = {};
      for (let i = 0; i + 1 < dims.length; i += 2) dimensions[dims[i]] = dims[i + 1];
      out.push({ namespace, name, dimensions });
    }
  }
  return out;
}
