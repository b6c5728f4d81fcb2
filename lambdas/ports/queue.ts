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

/** One delivered message, shaped like an SQS record so the same handler serves both. */
export interface QueueRecord {
  messageId: string;
  body: string;
  /** 1 on the first delivery. */
  receiveCount: number;
}

/** SQS partial batch response: the ids of the records that failed and must be redelivered. */
export interface BatchResult {
  batchItemFailures: { itemIdentifier: string }[];
}

/** What a worker is: the same function the SQS-triggered Lambda calls. */
export type BatchHandler = (records: QueueRecord[]) => Promise<BatchResult>;
