import {
  LocalStateMachines,
  type LocalExecution,
  type LocalRunOptions,
  type MachineName,
} from '../../lambdas/adapters/local/local-state-machines';
import { synthesizeDefinitions } from '../../lib/local-definitions';
import type { LocalEnvironment } from './local-environment';
import type { Progress } from './progress';

/** Runs executions of the CDK app's own state machines on a local migration, and records them. */
export interface LocalExecutor {
  /** Runs one execution to its end (or until `signal` aborts it) and prints its status. */
  execute(
    machine: MachineName,
    input: Record<string, unknown>,
    signal?: AbortSignal,
  ): Promise<LocalExecution>;
  /** Every execution run so far. */
  readonly executions: readonly LocalExecution[];
}

let synthesized: ReturnType<typeof synthesizeDefinitions> | undefined;

/**
 * Synthesizes the CDK app's state machines (once per process) and binds them to a local migration: its real
 * orchestrator tasks, its queue and workers, its switches and alarms. Waits are short (150 ms;
 * a cutover level bakes `bakeSeconds`), retries 200 ms apart.
 */
export function localExecutor(
  env: Pick<LocalEnvironment, 'deps'>,
  options: {
    print: (line: string) => void;
    progress: Progress;
    bakeSeconds: number;
    wrapTask?: LocalRunOptions['wrapTask'];
    /** Also told of each state entered (after the progress display). */
    onState?: LocalRunOptions['onState'];
  },
): LocalExecutor {
  if (!synthesized) options.print('synthesizing the CDK app’s state machines…');
  synthesized ??= synthesizeDefinitions();
  const machines = new LocalStateMachines(synthesized, env.deps, {
    waits: { '*': 150, Bake: options.bakeSeconds * 1000 },
    retryMs: 200,
    onState: (machine, state) => {
      options.progress.onState(machine, state);
      options.onState?.(machine, state);
    },
    ...(options.wrapTask ? { wrapTask: options.wrapTask } : {}),
  });
  const executions: LocalExecution[] = [];
  return {
    executions,
    execute: async (machine, input, signal) => {
      options.progress.begin();
      const run = await machines.run(machine, input, undefined, signal);
      executions.push(run);
      options.print(`[${machine}] ${run.status}${run.error ? `: ${run.error}: ${run.cause}` : ''}`);
      return run;
    },
  };
}
