import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { describeIssues } from '../../core/config';
import { ConfigError, InvalidInputError, LocalQueueStateError } from '../../core/errors';
import type { BatchHandler, DeadLetterPort, QueueDepthPort, QueuePort, QueueRecord } from '../../ports/queue';
import { planBatches } from '../aws/sqs-queue';

/** Records per handler invocation, as the Lambda SQS event source mapping's default. */
export const DEFAULT_LOCAL_BATCH_SIZE = 10;

export interface LocalQueueOptions {
  /** How long a delivered message stays invisible; a handler still running after it may see it again. */
  readonly visibilityTimeoutMs: number;
  /** Receives after which a message that still fails moves to the dead-letter list. */
  readonly maxReceiveCount: number;
  /** Handler invocations in flight at most (the event source mapping's maximum concurrency). */
  readonly concurrency: number;
  /**
   * How long after a failure the message becomes visible again.
   * @default the rest of its visibility timeout, as on SQS
   */
  readonly retryDelayMs?: number;
  /**
   * Records per handler invocation at most.
   * @default DEFAULT_LOCAL_BATCH_SIZE
   */
  readonly batchSize?: number;
}

const optionsSchema = z.object({
  visibilityTimeoutMs: z.number().int().positive(),
  maxReceiveCount: z.number().int().min(1).max(1000),
  concurrency: z.number().int().min(1).max(1000),
  retryDelayMs: z.number().int().min(0).optional(),
  batchSize: z.number().int().min(1).max(10_000).default(DEFAULT_LOCAL_BATCH_SIZE),
});

/** Why a message's last delivery did not succeed. */
export type DeliveryFailure =
  /** The batch handler threw (or rejected): every record of the batch failed. */
  | 'handler-threw'
  /** The handler named the record in `batchItemFailures`. */
  | 'reported-failed'
  /** The handler's result was not a valid partial batch response: every record failed, as on Lambda. */
  | 'invalid-response'
  /** The handler had not finished when the visibility timeout expired. */
  | 'visibility-timeout';

/** A message that failed `maxReceiveCount` receives and will never be delivered again. */
export interface DeadLetter {
  messageId: string;
  body: string;
  receiveCount: number;
  failure: DeliveryFailure;
  /** What the handler threw, or why its response was invalid; undefined when not known. */
  lastError?: unknown;
}

export interface LocalQueueStats {
  /** Messages waiting to be delivered: visible, or invisible until a retry delay passes. */
  queued: number;
  /** Messages delivered to a handler that is still running, within their visibility timeout. */
  inFlight: number;
  /** Handler invocations running (at most `concurrency`). */
  invocations: number;
  /** Deliveries so far, redeliveries included. */
  delivered: number;
  /** Messages whose handler succeeded, so they were deleted. */
  succeeded: number;
  deadLettered: number;
}

interface Message {
  readonly id: string;
  readonly body: string;
  readonly seq: number;
  receiveCount: number;
  /** performance.now() from which it may be delivered. */
  visibleAt: number;
  /** The latest delivery (its receipt); only its outcome counts, as with SQS receipt handles. */
  receipt?: number;
  failure?: DeliveryFailure;
  lastError?: unknown;
}

interface Delivery {
  readonly message: Message;
  readonly receipt: number;
}

const batchResultSchema = z
  .object({ batchItemFailures: z.array(z.object({ itemIdentifier: z.string().min(1) })).nullish() })
  .nullish();

/**
 * An in-process queue with the semantics of SQS behind a Lambda event source mapping, for the
 * local rehearsal and tests: at-least-once delivery; a delivered message is invisible for
 * `visibilityTimeoutMs` and is delivered again (even concurrently) if its handler has not
 * finished by then; a failed record (reported in `batchItemFailures`, or every record of a
 * batch whose handler threw) is delivered again after `retryDelayMs`; after `maxReceiveCount`
 * receives a failing message moves to the dead-letter list. At most `concurrency` handler
 * invocations of at most `batchSize` records run at once. A handler that succeeds deletes its
 * messages. Faults are injected by wrapping the handler (throw, report failures, or stall).
 *
 * Time is `performance.now()` (monotonic; faked by jest's modern fake timers). Timers are ref'd on purpose: a script awaiting `whenIdle()` must not exit while a message
 * waits out a delay. None is left once the queue is idle or stopped.
 */
export class LocalQueue implements QueuePort, QueueDepthPort {
  private readonly visibilityTimeoutMs: number;
  private readonly maxReceiveCount: number;
  private readonly concurrency: number;
  private readonly retryDelayMs: number | undefined;
  private readonly batchSize: number;

  private readonly messages = new Map<string, Message>();
  private readonly deadLetters: DeadLetter[] = [];
  private handler: BatchHandler | undefined;
  private running = false;
  private invocations = 0;
  private seq = 0;
  private receipts = 0;
  private delivered = 0;
  private succeeded = 0;
  private timer: NodeJS.Timeout | undefined;
  private idleWaiters: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  private drainWaiters: (() => void)[] = [];

  constructor(options: LocalQueueOptions) {
    const parsed = optionsSchema.safeParse(options);
    if (!parsed.success) throw new ConfigError(describeIssues(parsed.error), 'LocalQueue options');
    this.visibilityTimeoutMs = parsed.data.visibilityTimeoutMs;
    this.maxReceiveCount = parsed.data.maxReceiveCount;
    this.concurrency = parsed.data.concurrency;
    this.retryDelayMs = parsed.data.retryDelayMs;
    this.batchSize = parsed.data.batchSize;
  }

  /**
   * Enqueues every body, visible at once. Refuses (sending nothing) what SQS would refuse;
   * `calls` is the number of SendMessageBatch calls SQS would have needed.
   */
  async sendAll(bodies: readonly string[]): Promise<{ sent: number; calls: number }> {
    const batches = planBatches(bodies);
    const now = performance.now();
    for (const body of bodies) {
      const id = randomUUID();
      this.messages.set(id, { id, body, seq: this.seq++, receiveCount: 0, visibleAt: now });
    }
    this.pump();
    return { sent: bodies.length, calls: batches.length };
  }

  /** Starts delivering to `handler`, like enabling the event source mapping. */
  start(handler: BatchHandler): void {
    if (this.running) {
      throw new LocalQueueStateError('The local queue is already started', this.stateDetails());
    }
    this.handler = handler;
    this.running = true;
    this.pump();
  }

  /**
   * Stops delivering and resolves once the running invocations have finished (their outcomes
   * still count). Messages left stay queued for a later `start`; a `whenIdle` still waiting
   * for them is rejected with LocalQueueStateError.
   */
  async stop(): Promise<void> {
    this.running = false;
    this.clearTimer();
    if (this.invocations > 0) await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    if (!this.isIdle() && !this.running && this.idleWaiters.length > 0) {
      const error = new LocalQueueStateError(
        'The local queue was stopped before it became idle',
        this.stateDetails(),
      );
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const waiter of waiters) waiter.reject(error);
    }
  }

  /** Resolves when no message is queued or in flight and no invocation is running. */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve, reject) => this.idleWaiters.push({ resolve, reject }));
  }

  stats(): LocalQueueStats {
    const now = performance.now();
    let inFlight = 0;
    for (const message of this.messages.values()) {
      if (message.receipt !== undefined && message.visibleAt > now) inFlight++;
    }
    return {
      queued: this.messages.size - inFlight,
      inFlight,
      invocations: this.invocations,
      delivered: this.delivered,
      succeeded: this.succeeded,
      deadLettered: this.deadLetters.length,
    };
  }

  /** The queue's depth (QueueDepthPort): messages waiting, and delivered but not yet done. */
  async depth(): Promise<{ waiting: number; inFlight: number }> {
    const { queued, inFlight } = this.stats();
    return { waiting: queued, inFlight };
  }

  /** The dead-letter list, oldest first. */
  dlq(): DeadLetter[] {
    return this.deadLetters.map((letter) => ({ ...letter }));
  }

  /**
   * The dead-letter list as the DLQ ops redrive from (DeadLetterPort): a letter read is hidden
   * from the next reads for the visibility timeout, as SQS hides it, and gone once deleted.
   */
  deadLetterPort(): DeadLetterPort {
    const hiddenUntil = new Map<string, number>();
    return {
      receive: (max) => {
        const now = performance.now();
        const visible = this.deadLetters
          .filter((l) => (hiddenUntil.get(l.messageId) ?? 0) <= now)
          .slice(0, Math.max(0, Math.min(10, max)));
        for (const l of visible) hiddenUntil.set(l.messageId, now + this.visibilityTimeoutMs);
        return Promise.resolve(visible.map((l) => ({ body: l.body, receipt: l.messageId })));
      },
      delete: (receipts) => {
        const gone = new Set(receipts);
        for (let i = this.deadLetters.length - 1; i >= 0; i--)
          if (gone.has(this.deadLetters[i].messageId)) this.deadLetters.splice(i, 1);
        return Promise.resolve();
      },
    };
  }

  private isIdle(): boolean {
    return this.messages.size === 0 && this.invocations === 0;
  }

  private stateDetails() {
    const { queued, inFlight } = this.stats();
    return { queued, inFlight, running: this.running };
  }

  /** Dead-letters what has used up its receives, delivers what it can, and sets the next wake-up. */
  private pump(): void {
    const now = performance.now();
    if (this.running) {
      const visible: Message[] = [];
      for (const message of this.messages.values()) {
        if (message.visibleAt > now) continue;
        // On SQS the move happens at the next receive; a failure that used up the receives
        // was dead-lettered when it was reported, so only a visibility timeout lands here.
        if (message.receiveCount >= this.maxReceiveCount) {
          this.deadLetter(message, message.receipt !== undefined ? 'visibility-timeout' : message.failure);
        } else visible.push(message);
      }
      while (this.invocations < this.concurrency && visible.length > 0) {
        this.invoke(visible.splice(0, this.batchSize), now);
      }
    }
    this.schedule(now);
    this.settleIdle();
  }

  private invoke(batch: Message[], now: number): void {
    const handler = this.handler as BatchHandler;
    const deliveries: Delivery[] = batch.map((message) => {
      message.receiveCount++;
      message.receipt = ++this.receipts;
      message.visibleAt = now + this.visibilityTimeoutMs;
      return { message, receipt: message.receipt };
    });
    const records: QueueRecord[] = batch.map((m) => ({
      messageId: m.id,
      body: m.body,
      receiveCount: m.receiveCount,
    }));
    this.delivered += batch.length;
    this.invocations++;
    void this.run(handler, records, deliveries);
  }

  private async run(handler: BatchHandler, records: QueueRecord[], deliveries: Delivery[]): Promise<void> {
    const ids = new Set(records.map((r) => r.messageId));
    let failed: Map<string, { failure: DeliveryFailure; error?: unknown }>;
    try {
      // Called from a microtask, never inside pump(): a handler that sends or stops re-enters safely.
      const result = batchResultSchema.safeParse(await Promise.resolve().then(() => handler(records)));
      const items = result.success ? (result.data?.batchItemFailures ?? []) : [];
      const unknown = items.filter((item) => !ids.has(item.itemIdentifier));
      if (!result.success || unknown.length > 0) {
        const error = new InvalidInputError(
          'partial batch response',
          result.success
            ? unknown.map((item) => ({
                field: 'batchItemFailures',
                problem: `${item.itemIdentifier} is not a record of the batch`,
              }))
            : describeIssues(result.error),
        );
        failed = new Map([...ids].map((id) => [id, { failure: 'invalid-response', error }]));
      } else {
        failed = new Map(items.map((item) => [item.itemIdentifier, { failure: 'reported-failed' }]));
      }
    } catch (error) {
      failed = new Map([...ids].map((id) => [id, { failure: 'handler-threw', error }]));
    }
    this.invocations--;
    const now = performance.now();
    for (const { message, receipt } of deliveries) {
      // A newer delivery, a deletion or a dead-lettering has made this receipt stale.
      if (this.messages.get(message.id) !== message || message.receipt !== receipt) continue;
      const failure = failed.get(message.id);
      if (!failure) {
        this.messages.delete(message.id);
        this.succeeded++;
        continue;
      }
      message.receipt = undefined;
      message.failure = failure.failure;
      message.lastError = failure.error;
      if (message.receiveCount >= this.maxReceiveCount) this.deadLetter(message, failure.failure);
      else if (this.retryDelayMs !== undefined) message.visibleAt = now + this.retryDelayMs;
    }
    if (this.invocations === 0) {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const resolve of waiters) resolve();
    }
    this.pump();
  }

  private deadLetter(message: Message, failure: DeliveryFailure = 'visibility-timeout'): void {
    this.messages.delete(message.id);
    this.deadLetters.push({
      messageId: message.id,
      body: message.body,
      receiveCount: message.receiveCount,
      failure,
      ...(failure !== 'visibility-timeout' && message.lastError !== undefined
        ? { lastError: message.lastError }
        : {}),
    });
  }

  /** One timer, for the next moment a message becomes visible; none while stopped or idle. */
  private schedule(now: number): void {
    this.clearTimer();
    if (!this.running) return;
    let next = Infinity;
    for (const message of this.messages.values()) {
      if (message.visibleAt > now && message.visibleAt < next) next = message.visibleAt;
    }
    if (next === Infinity) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.pump();
      },
      Math.max(1, Math.ceil(next - now)),
    );
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private settleIdle(): void {
    if (!this.isIdle() || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const waiter of waiters) waiter.resolve();
  }
}
