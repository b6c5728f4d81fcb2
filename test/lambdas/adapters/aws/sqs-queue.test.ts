import {
  QueueDoesNotExist,
  RequestThrottled,
  SendMessageBatchCommand,
  SQSClient,
  SQSServiceException,
  type SendMessageBatchCommandInput,
  type SendMessageBatchCommandOutput,
} from '@aws-sdk/client-sqs';
import {
  isRetryableSendError,
  SQS_MAX_PAYLOAD_BYTES,
  SqsQueue,
  sqsEventToRecords,
  type SqsQueueOptions,
} from '../../../../lambdas/adapters/aws/sqs-queue';
import {
  ConfigError,
  InvalidInputError,
  MessageTooLargeError,
  QueueSendError,
} from '../../../../lambdas/core/errors';
import { mockSqs } from '../../../support/sqs-mock';

const QUEUE_URL = 'https://sqs.eu-west-1.amazonaws.com/123456789012/backfill';
const sqs = mockSqs();

const bodies = (n: number, prefix = 'window') => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

function queue(options: SqsQueueOptions = {}) {
  return new SqsQueue(new SQSClient({ region: 'eu-west-1' }), QUEUE_URL, {
    baseDelayMs: 1,
    maxDelayMs: 4,
    ...options,
  });
}

/** A SendMessageBatch response that accepts every entry but those whose body is in `fail`. */
function respond(input: SendMessageBatchCommandInput, fail: Record<string, { senderFault?: boolean }> = {}) {
  const entries = input.Entries ?? [];
  return {
    $metadata: {},
    Successful: entries
      .filter((e) => !(e.MessageBody! in fail))
      .map((e) => ({ Id: e.Id, MessageId: `msg-${e.Id}`, MD5OfMessageBody: 'md5' })),
    Failed: entries
      .filter((e) => e.MessageBody! in fail)
      .map((e) => ({
        Id: e.Id,
        SenderFault: fail[e.MessageBody!].senderFault ?? false,
        Code: fail[e.MessageBody!].senderFault ? 'InvalidParameterValue' : 'InternalError',
        Message: 'simulated',
      })),
  } as SendMessageBatchCommandOutput;
}

const sentInputs = () => sqs.commandCalls(SendMessageBatchCommand).map((call) => call.args[0].input);
const sentBodies = (input: SendMessageBatchCommandInput) => (input.Entries ?? []).map((e) => e.MessageBody);

const throttled = () =>
  new RequestThrottled({ message: 'Rate exceeded', $metadata: { httpStatusCode: 400 } });

async function sendError(promise: Promise<unknown>): Promise<QueueSendError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(QueueSendError);
  return error as QueueSendError;
}

describe('SqsQueue.sendAll batching', () => {
  it('sends 25 small bodies in 3 calls of 10, 10 and 5 entries, in order, with ids unique per call', async () => {
    sqs.on(SendMessageBatchCommand).callsFake((input) => respond(input));
    const input = bodies(25);

    const result = await queue().sendAll(input);

    expect(result).toEqual({ sent: 25, calls: 3 });
    const calls = sentInputs();
    expect(calls.map((c) => c.Entries?.length)).toEqual([10, 10, 5]);
    expect(calls.every((c) => c.QueueUrl === QUEUE_URL)).toBe(true);
    expect(calls.flatMap(sentBodies)).toEqual(input);
    for (const call of calls) {
      const ids = call.Entries!.map((e) => e.Id);
      expect(new Set(ids).size).toBe(ids.length);
      for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_-]{1,80}$/);
    }
  });

  it('splits large bodies so that no call carries more than 256 KiB of UTF-8', async () => {
    sqs.on(SendMessageBatchCommand).callsFake((input) => respond(input));
    const big = Array.from({ length: 5 }, (_, i) => `${i}`.padEnd(100 * 1024, 'x'));

    const result = await queue().sendAll(big);

    expect(result).toEqual({ sent: 5, calls: 3 });
    const calls = sentInputs();
    expect(calls.map((c) => c.Entries?.length)).toEqual([2, 2, 1]);
    for (const call of calls) {
      const bytes = sentBodies(call).reduce((sum, b) => sum + Buffer.byteLength(b!, 'utf8'), 0);
      expect(bytes).toBeLessThanOrEqual(SQS_MAX_PAYLOAD_BYTES);
    }
  });

  it('counts bytes, not characters: two 140 KB bodies of 2-byte characters go in separate calls', async () => {
    sqs.on(SendMessageBatchCommand).callsFake((input) => respond(input));
    const wide = ['é'.repeat(70_000), 'ü'.repeat(70_000)];

    await queue().sendAll(wide);

    expect(sentInputs().map((c) => c.Entries?.length)).toEqual([1, 1]);
  });

  it('accepts a body of exactly 256 KiB and mixes it with nothing that would exceed the limit', async () => {
    sqs.on(SendMessageBatchCommand).callsFake((input) => respond(input));
    const exact = 'a'.repeat(SQS_MAX_PAYLOAD_BYTES);

    const result = await queue().sendAll(['small-1', exact, 'small-2']);

    expect(result).toEqual({ sent: 3, calls: 3 });
    expect(sentInputs().map(sentBodies)).toEqual([['small-1'], [exact], ['small-2']]);
  });

  it('rejects a body over 256 KiB before sending anything, naming its index and size', async () => {
    sqs.on(SendMessageBatchCommand).callsFake((input) => respond(input));
    const input = [...bodies(12), 'a'.repeat(SQS_MAX_PAYLOAD_BYTES + 1)];

    const error = await queue()
      .sendAll(input)
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(MessageTooLargeError);
    expect(error).toMatchObject({
      name: 'MessageTooLargeError',
      oversized: [{ index: 12, bytes: SQS_MAX_PAYLOAD_BYTES + 1 }],
      limitBytes: SQS_MAX_PAYLOAD_BYTES,
    });
    expect(sentInputs()).toHaveLength(0);
  });

  it('rejects empty bodies and characters SQS refuses before sending anything', async () => {
    sqs.on(SendMessageBatchCommand).callsFake((input) => respond(input));

    const error = await queue()
      .sendAll(['ok', '', 'bad\u0000byte', 'lone \uD800 surrogate'])
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as InvalidInputError).issues.map((i) => i.field)).toEqual([
      'bodies.1',
      'bodies.2',
      'bodies.3',
    ]);
    expect(sentInputs()).toHaveLength(0);
  });

  it('makes no call for no bodies', async () => {
    expect(await queue().sendAll([])).toEqual({ sent: 0, calls: 0 });
    expect(sentInputs()).toHaveLength(0);
  });
});

describe('SqsQueue.sendAll retries', () => {
  it('resends only the entries a batch response reports as failed', async () => {
    sqs
      .on(SendMessageBatchCommand)
      .callsFakeOnce((input) => respond(input, { 'window-2': {}, 'window-5': {} }))
      .callsFake((input) => respond(input));

    const result = await queue().sendAll(bodies(10));

    expect(result).toEqual({ sent: 10, calls: 2 });
    const calls = sentInputs();
    expect(sentBodies(calls[0])).toHaveLength(10);
    expect(sentBodies(calls[1])).toEqual(['window-2', 'window-5']);
  });

  it('retries a throttled call and then succeeds', async () => {
    sqs
      .on(SendMessageBatchCommand)
      .rejectsOnce(throttled())
      .rejectsOnce(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' }))
      .callsFake((input) => respond(input));

    const result = await queue().sendAll(bodies(3));

    expect(result).toEqual({ sent: 3, calls: 3 });
    expect(sentInputs().map(sentBodies)).toEqual([bodies(3), bodies(3), bodies(3)]);
  });

  it('retries a server error (HTTP 5xx) and then succeeds', async () => {
    sqs
      .on(SendMessageBatchCommand)
      .rejectsOnce(
        new SQSServiceException({
          name: 'InternalError',
          $fault: 'server',
          $metadata: { httpStatusCode: 500 },
          message: 'oops',
        }),
      )
      .callsFake((input) => respond(input));

    expect(await queue().sendAll(bodies(2))).toEqual({ sent: 2, calls: 2 });
  });

  it('backs off exponentially with jitter, capped at maxDelayMs', async () => {
    sqs.on(SendMessageBatchCommand).rejects(throttled());
    const delays: number[] = [];

    await sendError(
      queue({
        maxAttempts: 5,
        baseDelayMs: 100,
        maxDelayMs: 500,
        random: () => 0.5,
        sleep: async (ms) => {
          delays.push(ms);
        },
      }).sendAll(bodies(1)),
    );

    expect(delays).toEqual([50, 100, 200, 250]);
  });

  it('gives up on an entry that keeps failing after maxAttempts and names it in QueueSendError', async () => {
    sqs.on(SendMessageBatchCommand).callsFake((input) => respond(input, { 'window-1': {} }));

    const error = await sendError(queue({ maxAttempts: 3 }).sendAll(bodies(10)));

    expect(error).toMatchObject({
      name: 'QueueSendError',
      sent: 9,
      total: 10,
      retryable: true,
      failures: [{ index: 1, code: 'InternalError', retryable: true }],
    });
    expect(error.message).toContain('1 of 10');
    expect(error.message).toContain('#1');
    const calls = sentInputs();
    expect(calls).toHaveLength(3);
    expect(calls.slice(1).map(sentBodies)).toEqual([['window-1'], ['window-1']]);
  });

  it('does not retry an entry rejected as a sender fault, and still sends the others', async () => {
    sqs
      .on(SendMessageBatchCommand)
      .callsFake((input) => respond(input, { 'window-4': { senderFault: true } }));

    const error = await sendError(queue().sendAll(bodies(15)));

    expect(error.failures).toEqual([
      expect.objectContaining({ index: 4, code: 'InvalidParameterValue', retryable: false }),
    ]);
    expect(error).toMatchObject({ sent: 14, retryable: false });
    expect(sentInputs()).toHaveLength(2);
  });

  it('gives up on a call that stays throttled, reporting every body unsent', async () => {
    sqs.on(SendMessageBatchCommand).rejects(throttled());

    const error = await sendError(queue({ maxAttempts: 4 }).sendAll(bodies(12)));

    expect(error.failures.map((f) => f.index)).toEqual(bodies(12).map((_, i) => i));
    expect(error.failures[0]).toMatchObject({ code: 'RequestThrottled', retryable: true });
    expect(error).toMatchObject({ sent: 0, total: 12, retryable: true });
    // The first batch used its 4 attempts; the second was not tried against a throttled queue.
    expect(sentInputs()).toHaveLength(4);
  });

  it('stops at once on a non-retryable error', async () => {
    sqs
      .on(SendMessageBatchCommand)
      .rejects(new QueueDoesNotExist({ message: 'no such queue', $metadata: { httpStatusCode: 400 } }));

    const error = await sendError(queue().sendAll(bodies(25)));

    expect(sentInputs()).toHaveLength(1);
    expect(error).toMatchObject({ sent: 0, total: 25, retryable: false });
    expect(error.failures).toHaveLength(25);
    expect(error.failures[0].reason).toContain('QueueDoesNotExist');
    expect(error.failures[24].reason).toContain('not sent');
  });

  it('reports the bodies of earlier batches as sent when a later batch fails', async () => {
    sqs
      .on(SendMessageBatchCommand)
      .callsFakeOnce((input) => respond(input))
      .rejects(new QueueDoesNotExist({ message: 'gone', $metadata: {} }));

    const error = await sendError(queue().sendAll(bodies(15)));

    expect(error.sent).toBe(10);
    expect(error.failures.map((f) => f.index)).toEqual([10, 11, 12, 13, 14]);
  });
});

describe('isRetryableSendError', () => {
  it.each([
    ['ThrottlingException by name', Object.assign(new Error('x'), { name: 'ThrottlingException' })],
    ['RequestThrottled', throttled()],
    ['$retryable', Object.assign(new Error('x'), { $retryable: {} })],
    ['HTTP 503', Object.assign(new Error('x'), { $metadata: { httpStatusCode: 503 } })],
    ['HTTP 429', Object.assign(new Error('x'), { $metadata: { httpStatusCode: 429 } })],
    ['a reset connection', Object.assign(new Error('x'), { code: 'ECONNRESET' })],
  ])('retries %s', (_, error) => expect(isRetryableSendError(error)).toBe(true));

  it.each([
    [
      'access denied',
      Object.assign(new Error('x'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } }),
    ],
    ['a missing queue', new QueueDoesNotExist({ message: 'x', $metadata: { httpStatusCode: 400 } })],
    ['a plain error', new Error('x')],
    ['a non-error', 'boom'],
  ])('does not retry %s', (_, error) => expect(isRetryableSendError(error)).toBe(false));
});

describe('SqsQueue options', () => {
  it('rejects an invalid maxAttempts and an empty queue URL with ConfigError', () => {
    const client = new SQSClient({ region: 'eu-west-1' });
    expect(() => new SqsQueue(client, QUEUE_URL, { maxAttempts: 0 })).toThrow(ConfigError);
    expect(() => new SqsQueue(client, '')).toThrow(ConfigError);
  });
});

describe('sqsEventToRecords', () => {
  const record = (messageId: string, receiveCount: string, body = `{"window":"${messageId}"}`) => ({
    messageId,
    receiptHandle: 'rh',
    body,
    attributes: { ApproximateReceiveCount: receiveCount, SentTimestamp: '1700000000000' },
    messageAttributes: {},
    md5OfBody: 'md5',
    eventSource: 'aws:sqs',
    eventSourceARN: 'arn:aws:sqs:eu-west-1:123456789012:backfill',
    awsRegion: 'eu-west-1',
  });

  it('converts a Lambda SQS event into queue records', () => {
    expect(sqsEventToRecords({ Records: [record('a', '1'), record('b', '3', 'raw')] })).toEqual([
      { messageId: 'a', body: '{"window":"a"}', receiveCount: 1 },
      { messageId: 'b', body: 'raw', receiveCount: 3 },
    ]);
  });

  it.each([
    ['not an object', 'hello', ''],
    ['no Records', {}, 'Records'],
    ['a record without attributes', { Records: [{ messageId: 'a', body: 'x' }] }, 'Records.0.attributes'],
    ['a receive count of 0', { Records: [record('a', '0')] }, 'Records.0.attributes.ApproximateReceiveCount'],
    [
      'a non-numeric receive count',
      { Records: [record('a', 'two')] },
      'Records.0.attributes.ApproximateReceiveCount',
    ],
    ['a body that is not a string', { Records: [{ ...record('a', '1'), body: 1 }] }, 'Records.0.body'],
    [
      'an event from another source',
      { Records: [{ ...record('a', '1'), eventSource: 'aws:kinesis' }] },
      'Records.0.eventSource',
    ],
    ['duplicate message ids', { Records: [record('a', '1'), record('a', '2')] }, 'Records.1.messageId'],
  ])('rejects %s with InvalidInputError naming the field', (_, event, field) => {
    let error: unknown;
    try {
      sqsEventToRecords(event);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as InvalidInputError).issues.map((i) => i.field)).toContain(field);
  });
});
