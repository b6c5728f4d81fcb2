import type { Context } from 'aws-lambda';
import { randomUUID } from 'node:crypto';

/** A Lambda context as the Node.js runtime passes it, for a function and one request. */
export function lambdaContext(functionName: string, awsRequestId: string = randomUUID()): Context {
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:eu-west-1:123456789012:function:${functionName}`,
    memoryLimitInMB: '1024',
    awsRequestId,
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: '2026/01/01/[$LATEST]0123456789abcdef',
    getRemainingTimeInMillis: () => 60_000,
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}

/** An SQS event as Lambda's SQS event source delivers it, one record per body. */
export function sqsEvent(bodies: readonly string[], receiveCount = 1) {
  return {
    Records: bodies.map((body) => ({
      messageId: randomUUID(),
      receiptHandle: `AQEB${randomUUID()}`,
      body,
      attributes: {
        ApproximateReceiveCount: String(receiveCount),
        SentTimestamp: String(Date.now()),
        SenderId: 'AROAEXAMPLE:orchestrator',
        ApproximateFirstReceiveTimestamp: String(Date.now()),
      },
      messageAttributes: {},
      md5OfBody: '',
      eventSource: 'aws:sqs',
      eventSourceARN: 'arn:aws:sqs:eu-west-1:123456789012:work',
      awsRegion: 'eu-west-1',
    })),
  };
}

/** One metric as a Powertools EMF line publishes it. */
export interface PublishedMetric {
  namespace: string;
  name: string;
  dimensions: Record<string, string>;
  value: number;
}

/**
 * What the Lambdas write to stdout and stderr (their CloudWatch Logs), captured: JSON log lines and the
 * metrics of their EMF lines (what CloudWatch turns into metrics).
 */
export class StdoutCapture {
  readonly lines: Record<string, unknown>[] = [];
  private spies: jest.SpiedFunction<typeof process.stdout.write>[] = [];

  /** Captures the JSON lines of stdout and stderr (both go to the function's log group). */
  start(): this {
    for (const stream of [process.stdout, process.stderr]) {
      const original = stream.write.bind(stream);
      const spy = jest.spyOn(stream, 'write').mockImplementation(((chunk: unknown, ...rest: unknown[]) => {
        const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8');
        const parsed: Record<string, unknown>[] = [];
        for (const line of text.split('\n').filter((l) => l.trim() !== '')) {
          try {
            parsed.push(JSON.parse(line) as Record<string, unknown>);
          } catch {
            return original(chunk as string, ...(rest as []));
          }
        }
        this.lines.push(...parsed);
        return true;
      }) as typeof process.stdout.write);
      this.spies.push(spy);
    }
    return this;
  }

  stop(): void {
    for (const spy of this.spies.splice(0)) spy.mockRestore();
  }

  /** Lines written since `from` (an index into `lines`). */
  since(from: number): Record<string, unknown>[] {
    return this.lines.slice(from);
  }

  /** The log lines (not EMF) among `lines`. */
  static logs(lines: Record<string, unknown>[]): Record<string, unknown>[] {
    return lines.filter((l) => typeof l.level === 'string' && !('_aws' in l));
  }

  /** Every metric of the EMF lines among `lines`. */
  static metrics(lines: Record<string, unknown>[]): PublishedMetric[] {
    const out: PublishedMetric[] = [];
    for (const line of lines) {
      const aws = line._aws as
        | { CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string }[] }[] }
        | undefined;
      if (!aws) continue;
      for (const directive of aws.CloudWatchMetrics) {
        for (const dimensionSet of directive.Dimensions) {
          const dimensions = Object.fromEntries(dimensionSet.map((d) => [d, String(line[d])]));
          for (const { Name } of directive.Metrics) {
            const raw = line[Name];
            const values = (Array.isArray(raw) ? raw : [raw]).map(Number);
            for (const value of values)
              out.push({ namespace: directive.Namespace, name: Name, dimensions, value });
          }
        }
      }
    }
    return out;
  }
}

/** The sum of a metric's values among `metrics`, by name (and service dimension). */
export function metricSum(metrics: PublishedMetric[], name: string, service?: string): number {
  return metrics
    .filter((m) => m.name === name && (service === undefined || m.dimensions.service === service))
    .reduce((sum, m) => sum + m.value, 0);
}
