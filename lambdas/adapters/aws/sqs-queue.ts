import {
  SendMessageBatchCommand,
  type SendMessageBatchCommandOutput,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { setTimeout as sleepMs } from 'node:timers/promises';
import { z } from 'zod';
import { describeIssues } from '../../core/config';
import {
  ConfigError,
  InvalidInputError,
  MessageTooLargeError,
  QueueSendError,
  type QueueSendFailure,
} from '../../core/errors';
import type { QueuePort, QueueRecord } from '../../ports/queue';

/** SQS's limit on one message body, and on the bodies of one SendMessageBatch together (256 KiB). */
export const SQS_MAX_PAYLOAD_BYTES = 262_144;
/** SQS's limit on the entries of one SendMessageBatch. */
export const SQS_MAX_BATCH_ENTRIES = 10;
export const DEFAULT_SEND_MAX_ATTEMPTS = 5;
export const DEFAULT_SEND_BASE_DELAY_MS = 100;
export const DEFAULT_SEND_MAX_DELAY_MS = 5_000;

export interface SqsQueueOptions {
  /**
   * Calls per batch before its remaining entries are given up (the first call included).
   * @default DEFAULT_SEND_MAX_ATTEMPTS
   */
  readonly maxAttempts?: number;
  /**
   * Upper bound of the first retry's delay; it doubles per retry (full jitter).
   * @default DEFAULT_SEND_BASE_DELAY_MS
   */
  readonly baseDelayMs?: number;
  /**
   * Upper bound of any retry's delay.
   * @default DEFAULT_SEND_MAX_DELAY_MS
   */
  readonly maxDelayMs?: number;
  /**
   * Source of jitter in [0, 1).
   * @default Math.random
   */
  readonly random?: () => number;
  /**
   * How to wait between retries.
   * @default a timer
   */
  readonly sleep?: (ms: number) => Promise<void>;
}

const optionsSchema = z
  .object({
    queueUrl: z.string().min(1, 'must be the URL of an SQS queue'),
    maxAttempts: z.number().int().min(1).max(100).default(DEFAULT_SEND_MAX_ATTEMPTS),
    baseDelayMs: z.number().min(0).default(DEFAULT_SEND_BASE_DELAY_MS),
    maxDelayMs: z.number().min(0).default(DEFAULT_SEND_MAX_DELAY_MS),
  })
  .refine((o) => o.maxDelayMs >= o.baseDelayMs, {
    path: ['maxDelayMs'],
    message: 'must be at least baseDelayMs',
  });

// SQS accepts only these characters in a body (#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to
// #xFFFD | #x10000 to #x10FFFF); a lone surrogate fails this too.
const DISALLOWED_BODY_CHARACTER = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;

/**
 * Checks every body against what SQS accepts, then groups their indexes into SendMessageBatch
 * calls in order: at most SQS_MAX_BATCH_ENTRIES entries and SQS_MAX_PAYLOAD_BYTES of UTF-8 per
 * call. Throws MessageTooLargeError or InvalidInputError before anything is sent. The local
 * queue uses it too, so a rehearsal rejects what SQS would reject.
 */
export function planBatches(bodies: readonly string[]): number[][] {
  const oversized: { index: number; bytes: number }[] = [];
  const issues: { field: string; problem: string }[] = [];
  const sizes = bodies.map((body, index) => {
    if (typeof body !== 'string') {
      issues.push({ field: `bodies.${index}`, problem: 'must be a string' });
      return 0;
    }
    const bytes = Buffer.byteLength(body, 'utf8');
    if (bytes > SQS_MAX_PAYLOAD_BYTES) oversized.push({ index, bytes });
    if (bytes === 0) issues.push({ field: `bodies.${index}`, problem: 'must not be empty' });
    else if (DISALLOWED_BODY_CHARACTER.test(body)) {
      issues.push({ field: `bodies.${index}`, problem: 'contains a character SQS does not accept' });
    }
    return bytes;
  });
  if (oversized.length > 0) throw new MessageTooLargeError(oversized, SQS_MAX_PAYLOAD_BYTES);
  if (issues.length > 0) throw new InvalidInputError('queue message bodies', issues);

  const batches: number[][] = [];
  let current: number[] = [];
  let bytes = 0;
  sizes.forEach((size, index) => {
    if (current.length === SQS_MAX_BATCH_ENTRIES || bytes + size > SQS_MAX_PAYLOAD_BYTES) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(index);
    bytes += size;
  });
  if (current.length > 0) batches.push(current);
  return batches;
}

const RETRYABLE_ERROR_NAMES = new Set([
  'InternalError',
  'InternalFailure',
  'ServiceUnavailable',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'SlowDown',
]);
const RETRYABLE_NETWORK_CODES = new Set(['ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ECONNREFUSED', 'EAI_AGAIN']);

/**
 * Whether a failed SendMessageBatch call may succeed when made again: throttling (any error
 * named like `ThrottlingException` or `RequestThrottled`), anything the SDK marks `$retryable`,
 * HTTP 5xx and 429, server faults and dropped connections.
 */
export function isRetryableSendError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const e = error as {
    name?: unknown;
    code?: unknown;
    $retryable?: unknown;
    $fault?: unknown;
    $metadata?: { httpStatusCode?: unknown };
  };
  if (e.$retryable) return true;
  if (e.$fault === 'server') return true;
  const status = e.$metadata?.httpStatusCode;
  if (typeof status === 'number' && (status >= 500 || status === 429)) return true;
  if (typeof e.name === 'string' && (/throttl/i.test(e.name) || RETRYABLE_ERROR_NAMES.has(e.name)))
    return true;
  return typeof e.code === 'string' && RETRYABLE_NETWORK_CODES.has(e.code);
}

function describeError(error: unknown): { reason: string; code?: string } {
  if (error instanceof Error) return { reason: `${error.name}: ${error.message}`, code: error.name };
  return { reason: String(error) };
}

/** The queue port over SQS: SendMessageBatch within SQS's limits, retrying what failed. */
export class SqsQueue implements QueuePort {
  private readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly random: () => number;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    private readonly client: SQSClient,
    private readonly queueUrl: string,
    options: SqsQueueOptions = {},
  ) {
    const parsed = optionsSchema.safeParse({ ...options, queueUrl });
    if (!parsed.success) throw new ConfigError(describeIssues(parsed.error), 'SqsQueue options');
    this.maxAttempts = parsed.data.maxAttempts;
    this.baseDelayMs = parsed.data.baseDelayMs;
    this.maxDelayMs = parsed.data.maxDelayMs;
    this.random = options.random ?? Math.random;
    this.sleep = options.sleep ?? ((ms) => sleepMs(ms));
  }

  /**
   * Sends every body; resolves with how many were sent and how many calls it took (retries
   * included). Bodies SQS would reject are refused before any call. Entries SQS reports as
   * failed through no fault of the sender, and throttled or server-failed calls, are retried
   * with jittered exponential backoff up to `maxAttempts` calls per batch. A call failing
   * with a non-retryable error (access denied, no such queue) stops the sending: the
   * remaining bodies are reported unsent. Throws QueueSendError naming every unsent body.
   */
  async sendAll(bodies: readonly string[]): Promise<{ sent: number; calls: number }> {
    const batches = planBatches(bodies);
    const failures: QueueSendFailure[] = [];
    let sent = 0;
    let calls = 0;
    for (let b = 0; b < batches.length; b++) {
      const outcome = await this.sendBatch(bodies, batches[b], failures);
      sent += outcome.sent;
      calls += outcome.calls;
      if (outcome.stoppedBy) {
        const { stoppedBy } = outcome;
        for (const index of batches.slice(b + 1).flat()) {
          failures.push({
            index,
            reason: `not sent: sending stopped after a call failed (${stoppedBy.reason})`,
            code: stoppedBy.code,
            retryable: stoppedBy.retryable,
          });
        }
        break;
      }
    }
    if (failures.length > 0) {
      failures.sort((a, b) => a.index - b.index);
      throw new QueueSendError(failures, sent, bodies.length, this.queueUrl);
    }
    return { sent, calls };
  }

  /** One batch and its retries; pushes what could not be sent to `failures`. */
  private async sendBatch(
    bodies: readonly string[],
    indexes: number[],
    failures: QueueSendFailure[],
  ): Promise<{ sent: number; calls: number; stoppedBy?: QueueSendFailure }> {
    let pending = indexes;
    let sent = 0;
    let calls = 0;
    for (let attempt = 1; pending.length > 0; attempt++) {
      if (attempt > 1) await this.sleep(this.backoffMs(attempt - 1));
      const last = attempt >= this.maxAttempts;
      calls++;
      let output: SendMessageBatchCommandOutput;
      try {
        output = await this.client.send(
          new SendMessageBatchCommand({
            QueueUrl: this.queueUrl,
            // The body's index in this sendAll call: unique within the call, and it names the body.
            Entries: pending.map((index) => ({ Id: String(index), MessageBody: bodies[index] })),
          }),
        );
      } catch (error) {
        const retryable = isRetryableSendError(error);
        if (retryable && !last) continue;
        const failure = { ...describeError(error), retryable };
        for (const index of pending) failures.push({ index, ...failure });
        return { sent, calls, stoppedBy: { index: pending[0], ...failure } };
      }

      const succeeded = new Set((output.Successful ?? []).map((entry) => entry.Id));
      const failed = new Map((output.Failed ?? []).map((entry) => [entry.Id, entry]));
      const retry: number[] = [];
      for (const index of pending) {
        const id = String(index);
        if (succeeded.has(id)) {
          sent++;
          continue;
        }
        const entry = failed.get(id);
        const failure: QueueSendFailure = entry
          ? {
              index,
              reason: `${entry.Code ?? 'UnknownError'}: ${entry.Message ?? 'no message'}${entry.SenderFault ? ' (sender fault)' : ''}`,
              code: entry.Code,
              // A sender fault (an invalid entry) would fail the same way again.
              retryable: !entry.SenderFault,
            }
          : { index, reason: 'SQS reported neither success nor failure for this entry', retryable: true };
        if (failure.retryable && !last) retry.push(index);
        else failures.push(failure);
      }
      pending = retry;
    }
    return { sent, calls };
  }

  private backoffMs(retry: number): number {
    const ceiling = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (retry - 1));
    return Math.floor(ceiling * this.random());
  }
}

/** The part of a Lambda SQS event this project reads (no @types/aws-lambda needed). */
export interface SqsEvent {
  Records: {
    messageId: string;
    body: string;
    eventSource?: string;
    attributes: { ApproximateReceiveCount: string; [name: string]: string | undefined };
    [field: string]: unknown;
  }[];
}

const sqsEventSchema = z
  .object({
    Records: z.array(
      z.object({
        messageId: z.string().min(1),
        body: z.string(),
        eventSource: z.literal('aws:sqs').optional(),
        attributes: z.object({
          ApproximateReceiveCount: z
            .string()
            .regex(/^[1-9][0-9]{0,9}$/, 'must be a positive integer, as a string'),
        }),
      }),
    ),
  })
  .superRefine((event, ctx) => {
    const seen = new Set<string>();
    event.Records.forEach((record, index) => {
      if (seen.has(record.messageId)) {
        ctx.addIssue({
          code: 'custom',
          path: ['Records', index, 'messageId'],
          message: `duplicates an earlier record's messageId ${record.messageId}`,
        });
      }
      seen.add(record.messageId);
    });
  });

/**
 * Converts the event an SQS-triggered Lambda receives into the port's records. The event is
 * typed `unknown` because it comes from outside: anything not shaped like an SQS event
 * (`SqsEvent`) gets InvalidInputError naming the bad fields.
 */
export function sqsEventToRecords(event: unknown): QueueRecord[] {
  const parsed = sqsEventSchema.safeParse(event);
  if (!parsed.success) throw new InvalidInputError('SQS event', describeIssues(parsed.error));
  return parsed.data.Records.map((record) => ({
    messageId: record.messageId,
    body: record.body,
    receiveCount: Number(record.attributes.ApproximateReceiveCount),
  }));
}
