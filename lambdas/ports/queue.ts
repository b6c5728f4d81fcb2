import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';

/**
 * The queue port: how the core hands work (one message per window) to workers. The SQS
 * adapter (lambdas/adapters/aws/sqs-queue.ts) and the in-process adapter
 * (lambdas/adapters/local/local-queue.ts) implement it with the same semantics: at-least-once
 * delivery, a visibility timeout, redelivery, and a dead-letter queue after N receives.
 */
export interface QueuePort {
  /**
   * Sends every body, in as few calls as the transport allows (SQS: at most 10 entries and
   * 256 KiB per SendMessageBatch). Resolves once all are accepted; throws QueueSendError
   * naming the bodies that could not be sent after retries.
   */
  sendAll(bodies: readonly string[]): Promise<{ sent: number; calls: number }>;
}

/**
 * How many messages a queue holds: waiting to be received, and received but not yet deleted
 * (being handled). The rollback from the write switch waits for the repair queue to drain.
 */
export interface QueueDepthPort {
  depth(): Promise<{ waiting: number; inFlight: number }>;
}

/** One delivered message, shaped like an SQS record so the same handler serves both. */
export type QueueRecord = {
  messageId: string;
  body: string;
  /** 1 on the first delivery. */
  receiveCount: number;
};

/** SQS partial batch response: the ids of the records that failed and must be redelivered. */
export interface BatchResult {
  batchItemFailures: { itemIdentifier: string }[];
}

/** What a worker is: the same function the SQS-triggered Lambda calls. */
export type BatchHandler = (records: QueueRecord[]) => Promise<BatchResult>;

/** What a batch handler tells its caller about each record, after handling it. */
export interface RecordHooks<T> {
  /** The record was handled: `result` is what the work returned. */
  onDone?: (record: QueueRecord, result: T) => void;
  /** The record failed: it is reported back for redelivery (or, after N receives, the DLQ). */
  onError?: (record: QueueRecord, error: Error) => void;
}

/**
 * A batch handler with SQS partial batch responses, through Powertools' `BatchProcessor` and
 * `processPartialResponse`: each record is handled on its own, and only the records whose
 * `handle` (or `onDone`) threw are reported back for redelivery, so a bad message never disturbs
 * the others of its batch. Records are handled one after another: a worker holds a bounded
 * number of database connections, and the queue's concurrency is the database's load. A batch
 * whose every record failed is reported the same way rather than thrown, so a failed Lambda
 * invocation (what the WorkerErrors alarm counts) means a failure of the invocation itself.
 */
export function partialBatchHandler<T>(
  handle: (record: QueueRecord) => Promise<T>,
  hooks: RecordHooks<T> = {},
): BatchHandler {
  return async (records) => {
    // A processor holds one batch's state: one per call, so batches may run side by side.
    const processor = new BatchProcessor(EventType.SQS);
    const handleRecord = async (record: QueueRecord): Promise<T> => {
      try {
        const result = await handle(record);
        hooks.onDone?.(record, result);
        return result;
      } catch (error) {
        hooks.onError?.(record, error instanceof Error ? error : new Error(String(error)));
        throw error;
      }
    };
    const { batchItemFailures } = await processPartialResponse(
      { Records: records },
      handleRecord,
      processor,
      {
        processInParallel: false,
        throwOnFullBatchFailure: false,
      },
    );
    // The processor's response object is shared between its runs: the caller gets its own.
    return { batchItemFailures: batchItemFailures.map(({ itemIdentifier }) => ({ itemIdentifier })) };
  };
}

/** One message read from a dead-letter queue: its body, and the handle that deletes it. */
export interface DeadLetterMessage {
  body: string;
  receipt: string;
}

/**
 * A dead-letter queue that ops redrive from (`migrate redrive`): messages are read (and hidden
 * from other readers until deleted or their visibility ends), then deleted once handled. The SQS
 * adapter is lambdas/adapters/aws/sqs-dead-letters.ts; LocalQueue.deadLetterPort() the local one.
 */
export interface DeadLetterPort {
  /** Up to `max` (at most 10) messages; none when the queue holds no visible message. */
  receive(max: number): Promise<DeadLetterMessage[]>;
  /** Deletes the messages of these receipts. */
  delete(receipts: readonly string[]): Promise<void>;
}
