/**
 * The executions port: whether the holder of the migration lock still runs. On AWS the holder
 * is a Step Functions execution ARN, described through the API
 * (lambdas/adapters/aws/sfn-executions.ts); locally it is an execution of the local runner,
 * which knows its own executions and the process that ran the others
 * (lambdas/adapters/local/local-executions.ts).
 */
export type HolderState =
  /** The holder runs: its lock must be respected. */
  | { alive: true; status: string }
  /** The holder has ended (ABORTED, FAILED, TIMED_OUT, SUCCEEDED, its process gone…): its lock is stale. */
  | { alive: false; status: string }
  /** Nobody can tell (not an execution, another machine, the API refused): the lock's time to live decides. */
  | { alive: undefined; status: string };

export interface ExecutionsPort {
  holderState(holder: string): Promise<HolderState>;
}
