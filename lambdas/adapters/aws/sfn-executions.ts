import { DescribeExecutionCommand, type SFNClient } from '@aws-sdk/client-sfn';
import type { ExecutionsPort, HolderState } from '../../ports/executions';

/** A Step Functions execution ARN (the lock holder every state machine task names). */
export const EXECUTION_ARN = /^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:execution:[^:]+:[^:]+$/;

/** Statuses of an execution that has ended: its lock is stale. */
export const ENDED_STATUSES = ['ABORTED', 'FAILED', 'TIMED_OUT', 'SUCCEEDED'] as const;

/**
 * The executions port over Step Functions: DescribeExecution of the holder. RUNNING (and
 * PENDING_REDRIVE, about to run again) is alive; ABORTED, FAILED, TIMED_OUT and SUCCEEDED are
 * dead, and so is an execution that no longer exists (executions are kept 90 days). A holder
 * that is not an execution ARN, or a call that fails (access, throttling), cannot be told.
 */
export class SfnExecutions implements ExecutionsPort {
  constructor(private readonly client: SFNClient) {}

  async holderState(holder: string): Promise<HolderState> {
    if (!EXECUTION_ARN.test(holder)) return { alive: undefined, status: 'not a Step Functions execution' };
    try {
      const out = await this.client.send(new DescribeExecutionCommand({ executionArn: holder }));
      const status = out.status ?? 'UNKNOWN';
      if ((ENDED_STATUSES as readonly string[]).includes(status)) return { alive: false, status };
      if (status === 'RUNNING' || status === 'PENDING_REDRIVE') return { alive: true, status };
      return { alive: undefined, status };
    } catch (error) {
      const name = (error as { name?: unknown })?.name;
      if (name === 'ExecutionDoesNotExist') return { alive: false, status: 'DOES_NOT_EXIST' };
      return {
        alive: undefined,
        status: `DescribeExecution failed: ${typeof name === 'string' ? name : 'Error'}`,
      };
    }
  }
}
