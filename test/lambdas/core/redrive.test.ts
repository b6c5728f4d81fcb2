import {
  DeleteMessageBatchCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { SqsDeadLetters } from '../../../lambdas/adapters/aws/sqs-dead-letters';
import { SqsQueue } from '../../../lambdas/adapters/aws/sqs-queue';
import { runBackfillPhase } from '../../../lambdas/adapters/local/local-migration';
import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import { startLocalWorkers, type LocalWorkers } from '../../../lambdas/adapters/local/local-workers';
import { redriveWindows } from '../../../lambdas/core/backfill/redrive';
import { BackfillFailedError, GuardRefusedError } from '../../../lambdas/core/errors';
import type { MigrationContext } from '../../../lambdas/core/migration-state';
import { prepareStep } from '../../../lambdas/core/phases';
import { expectAllInSync } from '../../support/in-sync';
import { testBackup } from '../../support/migration';
import { freshDatabases, type TestDatabases } from '../../support/pg';
import { seedV1, testConfig } from '../../support/fixtures';

/**
 * Ops redrive the backfill's failed windows from the DLQ once the cause is fixed
 * (`migrate redrive`, the Migration input {"action":"redrive"}): the window goes back to the
 * workers, and the backfill completes.
 */
describe('redriving failed backfill windows from the DLQ', () => {
  let dbs: TestDatabases;
  let ctx: MigrationContext;
  let workers: LocalWorkers | undefined;

  beforeAll(async () => {
    dbs = await freshDatabases('redrive');
    await seedV1(dbs.v1, { devices: 10, telemetry: 3000, seed: 8 });
    ctx = {
      v1: dbs.v1,
      v2: dbs.v2,
      config: testConfig(dbs, {
        batch: { telemetryWindowRows: 1000, entityWindowRows: 10, concurrency: 2, maxReceiveCount: 3 },
      }),
      parameters: new MemoryParameters({ '/iot-migration/dual-write': 'off' }),
      actor: 'person:test',
      backup: testBackup(dbs),
    };
  });
  afterAll(async () => {
    await workers?.stop();
    await dbs.drop();
  });

  it('is refused before the backfill has started, nothing changed', async () => {
    const queue = { sendAll: jest.fn() };
    await expect(redriveWindows({ ...ctx, queue })).rejects.toBeInstanceOf(GuardRefusedError);
    expect(queue.sendAll).not.toHaveBeenCalled();
  });

  it('sends a dead-lettered window back to the workers, and the backfill completes', async () => {
    await prepareStep(ctx);
    // V2 refuses one telemetry row (a constraint a DBA added, say): its window fails on every
    // delivery and ends in the local DLQ; Phase 2 fails with it.
    const victim = Number((await dbs.v1.query('SELECT min(id) AS id FROM device_data')).rows[0].id);
    await dbs.v2.query(`ALTER TABLE telemetry ADD CONSTRAINT refuse_one CHECK (legacy_id <> ${victim})`);
    workers = startLocalWorkers(ctx);
    const failed = await runBackfillPhase(ctx, workers, { pollMs: 50 }).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(BackfillFailedError);
    const dead = workers.queue.dlq();
    expect(dead).toHaveLength(1);
    const windowId = (JSON.parse(dead[0].body) as { windowId: number }).windowId;
    const before = await dbs.v2.query(`SELECT status FROM migration_control.windows WHERE id = $1`, [
      windowId,
    ]);
    expect(before.rows[0].status).toBe('failed');

    // The cause fixed, ops redrive: the window's message goes back to the worker queue.
    await dbs.v2.query(`ALTER TABLE telemetry DROP CONSTRAINT refuse_one`);
    const result = await redriveWindows({
      ...ctx,
      queue: workers.queue,
      deadLetters: workers.queue.deadLetterPort(),
    });
    expect(result).toMatchObject({
      redriven: [windowId],
      resetToPending: [],
      staleDeleted: 0,
      leftInDeadLetters: 0,
      next: expect.stringContaining('migrate advance'),
    });
    expect(workers.queue.dlq()).toEqual([]);

    // Phase 2 goes on (`migrate advance`) and completes: every row once, V2 equal to V1.
    const done = await runBackfillPhase(ctx, workers, { pollMs: 50 });
    expect(done).toMatchObject({ complete: true, windowsFailed: 0 });
    expect(done.windowsDone).toBe(done.windowsTotal);
    await expectAllInSync(dbs, ctx.config);
    const audit = await dbs.v2.query<{ details: { redriven: number[] } }>(
      `SELECT details FROM migration_control.audit_log WHERE action = 'backfill.redriven'`,
    );
    expect(audit.rows.map((r) => r.details.redriven)).toEqual([[windowId]]);
  });

  it('on SQS: receives the DLQ, sends the open windows back, deletes what it handled, leaves the rest', async () => {
    const sqs = mockClient(SQSClient);
    try {
      const windows = await dbs.v2.query<{ id: string }>(
        `SELECT id FROM migration_control.windows WHERE table_name = 'telemetry' ORDER BY seq LIMIT 3`,
      );
      const [open, done, lost] = windows.rows.map((r) => Number(r.id));
      await dbs.v2.query(
        `UPDATE migration_control.windows SET status = 'failed' WHERE id = ANY($1::bigint[])`,
        [[open, lost]],
      );
      const body = (id: number) => JSON.stringify({ type: 'copy-window', windowId: id });
      sqs
        .on(ReceiveMessageCommand)
        .resolvesOnce({
          Messages: [
            { Body: body(open), ReceiptHandle: 'r-open' },
            { Body: body(done), ReceiptHandle: 'r-done' },
            { Body: '{"type":"verify-slice","runId":1,"sliceId":2}', ReceiptHandle: 'r-slice' },
            { Body: body(open), ReceiptHandle: 'r-open-again' },
          ],
        })
        .resolves({ Messages: [] });
      sqs.on(SendMessageBatchCommand).callsFake((input: { Entries: { Id: string }[] }) => ({
        Successful: input.Entries.map((e) => ({ Id: e.Id, MessageId: `m-${e.Id}`, MD5OfMessageBody: 'x' })),
        Failed: [],
      }));
      sqs.on(DeleteMessageBatchCommand).resolves({ Failed: [] });
      const client = new SQSClient({ region: 'eu-west-1' });
      const result = await redriveWindows({
        ...ctx,
        queue: new SqsQueue(client, 'https://sqs.eu-west-1.amazonaws.com/123456789012/backfill'),
        deadLetters: new SqsDeadLetters(
          client,
          'https://sqs.eu-west-1.amazonaws.com/123456789012/backfill-dlq',
        ),
      });
      expect(result).toMatchObject({
        redriven: [open],
        resetToPending: [lost],
        staleDeleted: 2,
        leftInDeadLetters: 1,
        next: expect.stringContaining('nothing more'),
      });
      const sent = sqs.commandCalls(SendMessageBatchCommand).flatMap((c) => c.args[0].input.Entries!);
      expect(sent.map((e) => e.MessageBody)).toEqual([body(open)]);
      const deleted = sqs
        .commandCalls(DeleteMessageBatchCommand)
        .flatMap((c) => c.args[0].input.Entries!.map((e) => e.ReceiptHandle));
      expect(deleted.sort()).toEqual(['r-done', 'r-open', 'r-open-again']);
      const states = await dbs.v2.query<{ id: string; status: string }>(
        `SELECT id, status FROM migration_control.windows WHERE id = ANY($1::bigint[]) ORDER BY id`,
        [[open, done, lost]],
      );
      expect(Object.fromEntries(states.rows.map((r) => [Number(r.id), r.status]))).toEqual({
        [open]: 'queued',
        [done]: 'done',
        [lost]: 'pending',
      });
    } finally {
      sqs.restore();
    }
  });
});
