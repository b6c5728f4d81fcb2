import { SQSClient } from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';

/** Every SQS client of a test file mocked: the mock reset before each test, restored after the file. */
export function mockSqs() {
  const sqs = mockClient(SQSClient);
  beforeEach(() => sqs.reset());
  afterAll(() => sqs.restore());
  return sqs;
}
