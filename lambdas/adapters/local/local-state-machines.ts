import '../../core/polyfills';
import { randomBytes } from 'node:crypto';
import { StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
import { taskFailure } from '../../core/errors';
import { orchestrate, type OrchestratorDeps } from '../../core/orchestrator';
import { localExecutions } from './local-executions';

type Json = Parameters<StateMachine['run']>[0];

export type MachineName = 'migration' | 'cutover' | 'rollback';

export interface LocalDefinitions {
  migration: Record<string, unknown>;
  cutover: Record<string, unknown>;
  rollback: Record<string, unknown>;
}

/** What happened in one local execution, as the console would show it. */
export interface LocalExecution {
  executionId: string;
  /** ABORTED: stopped through the run's AbortSignal, as StopExecution stops one on AWS. */
  status: 'SUCCEEDED' | 'FAILED' | 'ABORTED';
  output?: unknown;
  error?: string;
  cause?: string;
  /** State names in the order they were entered. */
  path: string[];
  retries: string[];
  caught: string[];
}

interface StateDefinition {
  Type: string;
  Resource?: string;
  States?: Record<string, StateDefinition>;
}

export interface LocalRunOptions {
  /** Milliseconds each Wait state waits instead of its seconds (by state name; `*` for all). */
  waits?: Record<string, number>;
  /** Milliseconds between Retry attempts instead of IntervalSeconds (all states). */
  retryMs?: number;
  /** Called with each state entered (progress display). */
  onState?: (machine: MachineName, state: string) => void;
  /**
   * Whether an execution that ends ABORTED or FAILED is reported to the orchestrator, as the
   * stack's EventBridge rule on "Execution Status Change" does on AWS.
   * @default true
   */
  statusChangeRule?: boolean;
  /** Wraps a Lambda task (fault injection in tests): gets the task event, returns the result. */
  wrapTask?: (
    event: Record<string, unknown>,
    run: () => Promise<Record<string, unknown>>,
  ) => Promise<Record<string, unknown>>;
}

/**
 * Executes the synthesized state machine definitions in-process with aws-local-stepfunctions,
 * binding every Lambda task to the real orchestrator (the same `orchestrate` the Lambda runs)
 * and the Cutover's "start Rollback" task to a local run of the Rollback definition.
 */
/**
 * The longest task timeout a local run can honour: Node's timers hold at most 2^31 - 1 ms (a
 * longer delay fires at once), about 24.8 days.
 */
export const LOCAL_TASK_TIMEOUT_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

/**
 * The definition with AWS's default for Task states that set no timeout. Step Functions lets
 * such a task run for as long as the execution (99,999,999 s); aws-local-stepfunctions gives it
 * 60 s and fails it with States.Timeout, so a long local task (a pg_dump backup of a large V1 on
 * a busy machine) would fail only in a rehearsal. Tasks that do set a timeout keep it.
 */
export function withAwsTaskTimeouts(definition: Record<string, unknown>): Record<string, unknown> {
  const copy = structuredClone(definition);
  const visit = (machine: unknown): void => {
    const states = (machine as { States?: Record<string, Record<string, unknown>> } | undefined)?.States;
    for (const state of Object.values(states ?? {})) {
      if (
        state.Type === 'Task' &&
        state.TimeoutSeconds === undefined &&
        state.TimeoutSecondsPath === undefined
      ) {
        state.TimeoutSeconds = LOCAL_TASK_TIMEOUT_SECONDS;
      }
      for (const branch of (state.Branches as unknown[] | undefined) ?? []) visit(branch);
      visit(state.Iterator);
      visit(state.ItemProcessor);
    }
  };
  visit(copy);
  return copy;
}

export class LocalStateMachines {
  private readonly deps: OrchestratorDeps;

  constructor(
    private readonly definitions: LocalDefinitions,
    deps: OrchestratorDeps,
    private readonly options: LocalRunOptions = {},
  ) {
    // The lock's liveness check asks this process's registry about local holders.
    this.deps = { executions: localExecutions, ...deps };
  }

  /** Every Task state of a definition with its resource. */
  private tasks(name: MachineName): [string, string][] {
    const states = (this.definitions[name] as { States: Record<string, StateDefinition> }).States;
    return Object.entries(states)
      .filter(([, s]) => s.Type === 'Task')
      .map(([stateName, s]) => [stateName, s.Resource ?? '']);
  }

  private waits(name: MachineName): Record<string, number> {
    const states = (this.definitions[name] as { States: Record<string, StateDefinition> }).States;
    const out: Record<string, number> = {};
    for (const [stateName, s] of Object.entries(states)) {
      if (s.Type !== 'Wait') continue;
      const ms = this.options.waits?.[stateName] ?? this.options.waits?.['*'];
      if (ms !== undefined) out[stateName] = ms;
    }
    return out;
  }

  /**
   * Runs one execution to its end. Aborting `signal` stops it as "Stop execution" does on AWS (no
   * Catch runs). As the stack's EventBridge rule does on AWS, an execution that ends ABORTED or
   * FAILED is then reported to the orchestrator's `execution-ended` task (its end audited, its
   * lock released).
   */
  async run(
    name: MachineName,
    input: unknown,
    executionName?: string,
    signal?: AbortSignal,
  ): Promise<LocalExecution> {
    // The name ends with this process's mark, so a later run can tell whether it still runs.
    const id = `arn:aws:states:local-1:000000000000:execution:${name}:${executionName ?? `${name}-${Date.now()}-${randomBytes(3).toString('hex')}`}${localExecutions.mark()}`;
    localExecutions.started(id);
    let result: LocalExecution;
    try {
      result = await this.execute(name, input, id, signal);
    } finally {
      localExecutions.ended(id);
    }
    if (result.status !== 'SUCCEEDED' && this.options.statusChangeRule !== false) {
      await orchestrate(this.deps, {
        task: 'execution-ended',
        actor: id,
        status: result.status,
        stateMachineArn: `arn:aws:states:local-1:000000000000:stateMachine:${name}`,
      }).catch(() => undefined);
    }
    return result;
  }

  private async execute(
    name: MachineName,
    input: unknown,
    id: string,
    signal?: AbortSignal,
  ): Promise<LocalExecution> {
    const handlers: Record<string, (input: Json) => Promise<Json>> = {};
    for (const [stateName, resource] of this.tasks(name)) {
      if (resource.includes(':states:::states:startExecution')) {
        handlers[stateName] = async (params) => {
          const p = params as { Input?: unknown };
          const child = await this.run('rollback', p.Input ?? {});
          return { ExecutionArn: child.executionId, StartDate: new Date().toISOString() } as Json;
        };
      } else {
        handlers[stateName] = async (event) => {
          const run = () => orchestrate(this.deps, event);
          let result: Record<string, unknown>;
          try {
            result = this.options.wrapTask
              ? await this.options.wrapTask(event as Record<string, unknown>, run)
              : await run();
          } catch (error) {
            // As the orchestrator Lambda throws it (lambdas/handlers/orchestrator.ts).
            throw taskFailure(error);
          }
          // Through JSON, as a Lambda response is: no Dates, no undefined.
          return JSON.parse(JSON.stringify(result)) as Json;
        };
      }
    }
    const retryOverrides: Record<string, number> = {};
    if (this.options.retryMs !== undefined)
      for (const [stateName] of this.tasks(name)) retryOverrides[stateName] = this.options.retryMs;

    const machine = new StateMachine(
      withAwsTaskTimeouts(this.definitions[name]) as unknown as StateMachineDefinition,
      {
        validationOptions: { checkArn: false, checkPaths: true },
      },
    );
    const execution = machine.run(input as Json, {
      overrides: {
        taskResourceLocalHandlers: handlers,
        waitTimeOverrides: this.waits(name),
        retryIntervalOverrides: retryOverrides,
      },
      context: {
        Execution: {
          Id: id,
          Name: id.split(':').pop(),
          StartTime: new Date().toISOString(),
          Input: input as Record<string, unknown>,
        },
        StateMachine: { Id: `arn:aws:states:local-1:000000000000:stateMachine:${name}`, Name: name },
      } as never,
    });
    const abort = () => execution.abort();
    signal?.addEventListener('abort', abort, { once: true });
    const path: string[] = [];
    const retries: string[] = [];
    const caught: string[] = [];
    const logging = (async () => {
      for await (const event of execution.eventLogs) {
        const e = event as { type: string; state?: { name: string } };
        if (e.type === 'StateEntered' && e.state) {
          path.push(e.state.name);
          this.options.onState?.(name, e.state.name);
        } else if (e.type === 'StateRetried' && e.state) retries.push(e.state.name);
        else if (e.type === 'StateCaught' && e.state) caught.push(e.state.name);
      }
    })();
    try {
      const output = await execution.result;
      await logging.catch(() => undefined);
      return { executionId: id, status: 'SUCCEEDED', output, path, retries, caught };
    } catch (error) {
      await logging.catch(() => undefined);
      if (signal?.aborted) {
        const cause = signal.reason instanceof Error ? signal.reason.message : String(signal.reason ?? '');
        return {
          executionId: id,
          status: 'ABORTED',
          error: 'ExecutionAborted',
          cause,
          path,
          retries,
          caught,
        };
      }
      const e = error as { name?: string; message?: string; cause?: { name?: string; message?: string } };
      return {
        executionId: id,
        status: 'FAILED',
        error: e.cause?.name ?? e.name,
        cause: e.cause?.message ?? e.message,
        path,
        retries,
        caught,
      };
    } finally {
      signal?.removeEventListener('abort', abort);
    }
  }
}
