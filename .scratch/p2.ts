export interface OpsDeps {
  /** A Step Functions client, or a factory given the state machine's region. */
  sfn: SFNClient | ((region: string) => SFNClient);
  now: () => Date;
  /** The OS user, recorded as the rollback's actor `cli:<user>`. */
  user: string;
  /** Writes a line of standard output. */
  print: (line: string) => void;
  /** Writes a line of standard error. @default print */
  printError?: (line: string) => void;
  /** @default process.env */
  env?: Record<string, string | undefined>;
  /** Random part of execution names. @default 8 hex characters */
  random?: () => string;
  /** DescribeExecution poll interval of `status --wait`, in ms. @default 2000 */
  pollMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED']);

function parseOutput(output: string | undefined): unknown {
  if (output === undefined) return undefined;
  try {
    return JSON.parse(output);
  } catch {
    // Step Functions outputs are JSON; show anything else as it came.
    return output;
  }
}

