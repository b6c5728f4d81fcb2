import { DeleteMessageBatchCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import {
  DeadLetterDeleteError,
  REDRIVE_VISIBILITY_SECONDS,
  SqsDeadLetters,
} from '../../../../lambdas/adapters/aws/sqs-dead-letters';
import { ConfigError } from '../../../../lambdas/core/errors';
import { mockSqs } from '../../../support/sqs-mock';

const DLQ_URL = 'https://sqs.eu-west-1.amazonaws.com/123456789012/backfill-dlq';
const sqs = mockSqs();

const dlq = () => new SqsDeadLetters(new SQSClient({ region: 'eu-west-1' }), DLQ_URL);

describe('SqsDeadLetters (the worker DLQ a redrive reads)', () => {
  it('receives at most 10 without long polling, hiding them while the redrive works', async () => {
    sqs.on(ReceiveMessageCommand).resolves({
      Messages: [
        { Body: '{"type":"copy-window","windowId":7}', ReceiptHandle: 'r-7' },
        { ReceiptHandle: 'no-body' },
      ],
    });
    expect(await dlq().receive(25)).toEqual([
      { body: '{"type":"copy-window","windowId":7}', receipt: 'r-7' },
    ]);
    expect(sqs.commandCalls(ReceiveMessageCommand)[0].args[0].input).toEqual({
      QueueUrl: DLQ_URL,
      MaxNumberOfMessages: 10,
      WaitTimeSeconds: 0,
      VisibilityTimeout: REDRIVE_VISIBILITY_SECONDS,
    });
    sqs.on(ReceiveMessageCommand).resolves({});
    expect(await dlq().receive(3)).toEqual([]);
    expect(sqs.commandCalls(ReceiveMessageCommand)[1].args[0].input.MaxNumberOfMessages).toBe(3);
  });

  it('deletes by receipt in batches of 10, and names the entries SQS refused', async () => {
    sqs.on(DeleteMessageBatchCommand).resolves({ Successful: [], Failed: [] });
    const receipts = Array.from({ length: 23 }, (_, i) => `r-${i}`);
    await dlq().delete(receipts);
    const calls = sqs.commandCalls(DeleteMessageBatchCommand).map((c) => c.args[0].input);
    expect(calls.map((c) => c.Entries!.length)).toEqual([10, 10, 3]);
    expect(calls[2].Entries).toEqual([
      { Id: '20', ReceiptHandle: 'r-20' },
      { Id: '21', ReceiptHandle: 'r-21' },
      { Id: '22', ReceiptHandle: 'r-22' },
    ]);
    expect(calls.every((c) => c.QueueUrl === DLQ_URL)).toBe(true);

    sqs.reset();
    sqs.on(DeleteMessageBatchCommand).resolves({
      Failed: [{ Id: '1', Code: 'ReceiptHandleIsInvalid', SenderFault: true, Message: 'expired' }],
    });
    const error = await dlq()
      .delete(['a', 'b'])
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeadLetterDeleteError);
    expect((error as Error).message).toContain('1 (ReceiptHandleIsInvalid: expired)');
  });

  it('refuses to be built without a queue URL', () => {
    expect(() => new SqsDeadLetters(new SQSClient({ region: 'eu-west-1' }), '')).toThrow(ConfigError);
  });
});
