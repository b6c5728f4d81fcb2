import { DeleteMessageBatchCommand, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { ConfigError, MigrationError } from '../../core/errors';
import type { DeadLetterMessage, DeadLetterPort } from '../../ports/queue';

/** SQS refused to delete dead letters a redrive had sent back (they come back after their visibility). */
export class DeadLetterDeleteError extends MigrationError {
  override readonly retryable = true;
  constructor(readonly failures: { id: string; code: string; message: string }[]) {
    super(
      `${failures.length} dead letter(s) could not be deleted from the DLQ: ${failures
        .slice(0, 5)
        .map((f) => `${f.id} (${f.code}: ${f.message})`)
        .join(', ')}`,
      { failures },
    );
  }
}

/**
 * How long a dead letter read by a redrive stays hidden from other readers (seconds): long
 * enough to send its window back and delete it. @default 60
 */
export const REDRIVE_VISIBILITY_SECONDS = 60;

/**
 * The worker queue's DLQ on SQS (DeadLetterPort): ReceiveMessage without long polling (an
 * empty answer means the DLQ has nothing visible), DeleteMessageBatch by receipt handle, 10 at
 * a time. A delete SQS refuses is reported by name (DeadLetterDeleteError lists the entries): the
 * message then comes back after its visibility timeout and a later redrive finds its window done.
 */
export class SqsDeadLetters implements DeadLetterPort {
  constructor(
    private readonly client: SQSClient,
    private readonly queueUrl: string,
  ) {
    if (!queueUrl) throw new ConfigError([{ field: 'queueUrl', problem: 'must be the URL of an SQS queue' }]);
  }

  async receive(max: number): Promise<DeadLetterMessage[]> {
    const out = await this.client.send(
      new ReceiveMessageCommand({
        QueueUrl: this.queueUrl,
        MaxNumberOfMessages: Math.max(1, Math.min(10, max)),
        WaitTimeSeconds: 0,
        VisibilityTimeout: REDRIVE_VISIBILITY_SECONDS,
      }),
    );
    return (out.Messages ?? [])
      .filter((m) => m.Body !== undefined && m.ReceiptHandle !== undefined)
      .map((m) => ({ body: m.Body!, receipt: m.ReceiptHandle! }));
  }

  async delete(receipts: readonly string[]): Promise<void> {
    for (let i = 0; i < receipts.length; i += 10) {
      const batch = receipts.slice(i, i + 10);
      const out = await this.client.send(
        new DeleteMessageBatchCommand({
          QueueUrl: this.queueUrl,
          Entries: batch.map((ReceiptHandle, n) => ({ Id: String(i + n), ReceiptHandle })),
        }),
      );
      if (out.Failed && out.Failed.length > 0) {
        throw new DeadLetterDeleteError(
          out.Failed.map((f) => ({ id: f.Id ?? '?', code: f.Code ?? 'Unknown', message: f.Message ?? '' })),
        );
      }
    }
  }
}
