import { LocalQueue, type LocalQueueOptions } from '../../../../lambdas/adapters/local/local-queue';
import {
  ConfigError,
  InvalidInputError,
  LocalQueueStateError,
  MessageTooLargeError,
} from '../../../../lambdas/core/errors';
import type { BatchHandler, BatchResult, QueueRecord } from '../../../../lambdas/ports/queue';

const queues: LocalQueue[] = [];
afterEach(async () => {
  jest.useRealTimers();
  await Promise.all(queues.splice(0).map((q) => q.stop()));
});

function localQueue(options: Partial<LocalQueueOptions> = {}): LocalQueue {
  const queue = new LocalQueue({
    visibilityTimeoutMs: 10_000,
    maxReceiveCount: 3,
    concurrency: 2,
    ...options,
  });
  queues.push(queue);
  return queue;
}

const bodies = (n: number) => Array.from({ length: n }, (_, i) => `window-${i}`);
const ok: BatchResult = { batchItemFailures: [] };
const fail = (...records: QueueRecord[]): BatchResult => ({
  batchItemFailures: records.map((r) => ({ itemIdentifier: r.messageId })),
});

/** Records every delivery, then answers with `respond`. */
function recorder(respond: (records: QueueRecord[]) => Promise<BatchResult> | BatchResult = () => ok) {
  const deliveries: QueueRecord[] = [];
  const batches: QueueRecord[][] = [];
  const handler: BatchHandler = async (records) => {
    batches.push(records);
    deliveries.push(...records.map((r) => ({ ...r })));
    return respond(records);
  };
  const receiveCountsOf = (body: string) =>
    deliveries.filter((d) => d.body === body).map((d) => d.receiveCount);
  return { handler, deliveries, batches, receiveCountsOf };
}

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Waits, a timer tick at a time, until `condition` holds (fails the test after ~5 s). */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 5_000 && !condition(); i++) await new Promise((r) => setTimeout(r, 1));
  expect(condition()).toBe(true);
}

const flush = () => new Promise((r) => setImmediate(r));

describe('LocalQueue delivery', () => {
  it('delivers every message once in batches of at most batchSize and deletes it on success', async () => {
    const queue = localQueue({ concurrency: 2 });
    const { handler, deliveries, batches } = recorder();

    expect(await queue.sendAll(bodies(25))).toEqual({ sent: 25, calls: 3 });
    queue.start(handler);
    await queue.whenIdle();

    expect(deliveries.map((d) => d.body).sort()).toEqual(bodies(25).sort());
    expect(deliveries.every((d) => d.receiveCount === 1)).toBe(true);
    expect(new Set(deliveries.map((d) => d.messageId)).size).toBe(25);
    expect(Math.max(...batches.map((b) => b.length))).toBe(10);
    expect(queue.stats()).toEqual({
      queued: 0,
      inFlight: 0,
      invocations: 0,
      delivered: 25,
      succeeded: 25,
      deadLettered: 0,
    });
    expect(queue.dlq()).toEqual([]);
  });

  it('holds messages until started, and delivers messages sent while running', async () => {
    const queue = localQueue();
    const { handler, deliveries } = recorder();
    await queue.sendAll(['early']);
    await flush();
    expect(queue.stats()).toMatchObject({ queued: 1, delivered: 0 });

    queue.start(handler);
    await queue.whenIdle();
    await queue.sendAll(['late']);
    await queue.whenIdle();

    expect(deliveries.map((d) => d.body)).toEqual(['early', 'late']);
  });

  it('redelivers a record reported in batchItemFailures, with a higher receiveCount, and only that one', async () => {
    const queue = localQueue({ retryDelayMs: 0 });
    const { handler, receiveCountsOf } = recorder((records) =>
      fail(...records.filter((r) => r.body === 'b' && r.receiveCount === 1)),
    );

    await queue.sendAll(['a', 'b', 'c']);
    queue.start(handler);
    await queue.whenIdle();

    expect(receiveCountsOf('a')).toEqual([1]);
    expect(receiveCountsOf('b')).toEqual([1, 2]);
    expect(receiveCountsOf('c')).toEqual([1]);
    expect(queue.stats()).toMatchObject({ delivered: 4, succeeded: 3, deadLettered: 0 });
  });

  it('redelivers every record of a batch whose handler threw', async () => {
    const queue = localQueue({ retryDelayMs: 0 });
    let thrown = false;
    const { handler, receiveCountsOf } = recorder(() => {
      if (thrown) return ok;
      thrown = true;
      throw new Error('worker crashed');
    });

    await queue.sendAll(['a', 'b', 'c']);
    queue.start(handler);
    await queue.whenIdle();

    for (const body of ['a', 'b', 'c']) expect(receiveCountsOf(body)).toEqual([1, 2]);
    expect(queue.stats()).toMatchObject({ delivered: 6, succeeded: 3, deadLettered: 0 });
  });

  it('fails the whole batch when the response names a record that is not in it, as Lambda does', async () => {
    const queue = localQueue({ maxReceiveCount: 1 });
    const { handler } = recorder(() => ({ batchItemFailures: [{ itemIdentifier: 'not-in-the-batch' }] }));

    await queue.sendAll(['a', 'b']);
    queue.start(handler);
    await queue.whenIdle();

    const dlq = queue.dlq();
    expect(dlq.map((d) => d.body).sort()).toEqual(['a', 'b']);
    expect(dlq.every((d) => d.failure === 'invalid-response')).toBe(true);
    expect(dlq[0].lastError).toBeInstanceOf(InvalidInputError);
    expect(queue.stats().succeeded).toBe(0);
  });

  it('keeps a failed message invisible for retryDelayMs', async () => {
    jest.useFakeTimers();
    const queue = localQueue({ retryDelayMs: 60_000 });
    const { handler, receiveCountsOf } = recorder((records) =>
      fail(...records.filter((r) => r.receiveCount === 1)),
    );

    await queue.sendAll(['a']);
    queue.start(handler);
    await jest.advanceTimersByTimeAsync(59_000);
    expect(receiveCountsOf('a')).toEqual([1]);
    expect(queue.stats()).toMatchObject({ queued: 1, inFlight: 0 });

    await jest.advanceTimersByTimeAsync(1_000);
    expect(receiveCountsOf('a')).toEqual([1, 2]);
    expect(queue.stats()).toMatchObject({ queued: 0, succeeded: 1 });
  });

  it('by default keeps a failed message invisible for the rest of its visibility timeout, as SQS does', async () => {
    jest.useFakeTimers();
    const queue = localQueue({ visibilityTimeoutMs: 30_000 });
    const { handler, receiveCountsOf } = recorder((records) =>
      fail(...records.filter((r) => r.receiveCount === 1)),
    );

    await queue.sendAll(['a']);
    queue.start(handler);
    await jest.advanceTimersByTimeAsync(29_000);
    expect(receiveCountsOf('a')).toEqual([1]);

    await jest.advanceTimersByTimeAsync(1_000);
    expect(receiveCountsOf('a')).toEqual([1, 2]);
  });
});

describe('LocalQueue visibility timeout', () => {
  it('delivers again, concurrently, a message whose handler outlives the visibility timeout', async () => {
    const queue = localQueue({ visibilityTimeoutMs: 20, concurrency: 2 });
    const redelivered = deferred();
    const overlapping: boolean[] = [];
    let running = 0;
    const { handler, receiveCountsOf } = recorder(async (records) => {
      overlapping.push(running > 0);
      running++;
      try {
        // The first delivery stalls until the message has been delivered a second time.
        if (records[0].receiveCount === 1) await redelivered.promise;
        else redelivered.resolve();
        return ok;
      } finally {
        running--;
      }
    });

    await queue.sendAll(['slow']);
    queue.start(handler);
    await queue.whenIdle();

    expect(receiveCountsOf('slow')).toEqual([1, 2]);
    expect(overlapping).toEqual([false, true]);
    // The first delivery's late success uses a stale receipt: the message is counted once.
    expect(queue.stats()).toMatchObject({ delivered: 2, succeeded: 1, deadLettered: 0 });
  });

  it('ignores the late failure of a superseded delivery while the newer delivery runs', async () => {
    const queue = localQueue({
      visibilityTimeoutMs: 20,
      concurrency: 2,
      maxReceiveCount: 5,
      retryDelayMs: 0,
    });
    const secondStarted = deferred();
    const firstDone = deferred();
    const { handler, receiveCountsOf } = recorder(async (records) => {
      if (records[0].receiveCount === 1) {
        await secondStarted.promise;
        firstDone.resolve();
        return fail(...records);
      }
      secondStarted.resolve();
      await firstDone.promise;
      await flush();
      return ok;
    });

    await queue.sendAll(['slow']);
    queue.start(handler);
    await queue.whenIdle();

    // Had the stale failure counted, the message would have been delivered a third time.
    expect(receiveCountsOf('slow')).toEqual([1, 2]);
    expect(queue.stats()).toMatchObject({ delivered: 2, succeeded: 1, deadLettered: 0 });
  });

  it('dead-letters a message whose handler outlives the visibility timeout of its last receive', async () => {
    const queue = localQueue({ visibilityTimeoutMs: 10, maxReceiveCount: 1 });
    const release = deferred();
    const { handler } = recorder(async () => {
      await release.promise;
      return ok;
    });

    await queue.sendAll(['stuck']);
    queue.start(handler);
    await until(() => queue.dlq().length === 1);
    release.resolve();
    await queue.whenIdle();

    expect(queue.dlq()).toEqual([
      expect.objectContaining({ body: 'stuck', receiveCount: 1, failure: 'visibility-timeout' }),
    ]);
    expect(queue.stats()).toMatchObject({ delivered: 1, succeeded: 0, deadLettered: 1 });
  });
});

describe('LocalQueue dead-letter list', () => {
  it('moves a record that fails maxReceiveCount times to the DLQ while the rest of its batch completes', async () => {
    const queue = localQueue({ maxReceiveCount: 3, retryDelayMs: 0 });
    const { handler, batches, receiveCountsOf } = recorder((records) =>
      fail(...records.filter((r) => r.body === 'poison')),
    );

    await queue.sendAll(['ok-1', 'poison', 'ok-2']);
    queue.start(handler);
    await queue.whenIdle();

    expect(batches[0].map((r) => r.body)).toEqual(['ok-1', 'poison', 'ok-2']);
    expect(receiveCountsOf('poison')).toEqual([1, 2, 3]);
    expect(receiveCountsOf('ok-1')).toEqual([1]);
    expect(receiveCountsOf('ok-2')).toEqual([1]);
    const dlq = queue.dlq();
    expect(dlq).toEqual([
      { messageId: batches[0][1].messageId, body: 'poison', receiveCount: 3, failure: 'reported-failed' },
    ]);
    expect(queue.stats()).toEqual({
      queued: 0,
      inFlight: 0,
      invocations: 0,
      delivered: 5,
      succeeded: 2,
      deadLettered: 1,
    });
  });

  it('keeps the error a handler threw as the dead letter’s last error', async () => {
    const queue = localQueue({ maxReceiveCount: 2, retryDelayMs: 0, batchSize: 1 });
    const boom = new Error('window 7 cannot be copied');
    const { handler, receiveCountsOf } = recorder((records) => {
      if (records[0].body === 'window-7') throw boom;
      return ok;
    });

    await queue.sendAll(['window-6', 'window-7', 'window-8']);
    queue.start(handler);
    await queue.whenIdle();

    expect(receiveCountsOf('window-7')).toEqual([1, 2]);
    const [letter] = queue.dlq();
    expect(letter).toMatchObject({ body: 'window-7', receiveCount: 2, failure: 'handler-threw' });
    expect(letter.lastError).toBe(boom);
    expect(queue.stats()).toMatchObject({ succeeded: 2, deadLettered: 1 });
  });
});

describe('LocalQueue concurrency', () => {
  it('never runs more than `concurrency` handler invocations at once', async () => {
    const queue = localQueue({ concurrency: 3, batchSize: 2 });
    let running = 0;
    let maxRunning = 0;
    const { handler, batches } = recorder(async () => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      expect(queue.stats().invocations).toBeLessThanOrEqual(3);
      await new Promise((r) => setTimeout(r, 2));
      running--;
      return ok;
    });

    await queue.sendAll(bodies(40));
    queue.start(handler);
    await queue.whenIdle();

    expect(maxRunning).toBe(3);
    expect(batches.every((b) => b.length <= 2)).toBe(true);
    expect(queue.stats()).toMatchObject({ succeeded: 40, delivered: 40 });
  });
});

describe('LocalQueue lifecycle', () => {
  it('resolves whenIdle at once when empty, and otherwise only after the last handler finished', async () => {
    const queue = localQueue();
    await queue.whenIdle();
    const release = deferred();
    const { handler, deliveries } = recorder(async () => {
      await release.promise;
      return ok;
    });
    let idle = false;

    await queue.sendAll(['a']);
    const whenIdle = queue.whenIdle().then(() => (idle = true));
    queue.start(handler);
    await until(() => deliveries.length === 1);
    await flush();
    expect(idle).toBe(false);
    expect(queue.stats()).toMatchObject({ queued: 0, inFlight: 1, invocations: 1 });

    release.resolve();
    await whenIdle;
    expect(queue.stats()).toMatchObject({ queued: 0, inFlight: 0, invocations: 0, succeeded: 1 });
  });

  it('stop waits for running handlers, delivers nothing more, rejects a pending whenIdle, and start resumes', async () => {
    const queue = localQueue({ concurrency: 1, batchSize: 1 });
    const release = deferred();
    const { handler, deliveries } = recorder(async (records) => {
      if (records[0].body === 'a') await release.promise;
      return ok;
    });

    await queue.sendAll(['a', 'b']);
    const whenIdle = queue.whenIdle();
    queue.start(handler);
    await until(() => deliveries.length === 1);
    const stopped = queue.stop();
    release.resolve();
    await stopped;

    await expect(whenIdle).rejects.toBeInstanceOf(LocalQueueStateError);
    expect(deliveries.map((d) => d.body)).toEqual(['a']);
    expect(queue.stats()).toMatchObject({ queued: 1, succeeded: 1, invocations: 0 });

    queue.start(handler);
    await queue.whenIdle();
    expect(deliveries.map((d) => d.body)).toEqual(['a', 'b']);
  });

  it('refuses to start twice', () => {
    const queue = localQueue();
    queue.start(recorder().handler);
    expect(() => queue.start(recorder().handler)).toThrow(LocalQueueStateError);
  });

  it('refuses a body SQS would refuse, queueing nothing', async () => {
    const queue = localQueue();

    await expect(queue.sendAll(['fine', 'x'.repeat(262_145)])).rejects.toBeInstanceOf(MessageTooLargeError);
    expect(queue.stats().queued).toBe(0);
  });

  it.each([
    ['a zero visibility timeout', { visibilityTimeoutMs: 0 }],
    ['a zero maxReceiveCount', { maxReceiveCount: 0 }],
    ['a fractional concurrency', { concurrency: 1.5 }],
    ['a negative retry delay', { retryDelayMs: -1 }],
    ['a zero batch size', { batchSize: 0 }],
  ])('rejects %s with ConfigError', (_, options) => {
    expect(
      () => new LocalQueue({ visibilityTimeoutMs: 1000, maxReceiveCount: 3, concurrency: 2, ...options }),
    ).toThrow(ConfigError);
  });
});
