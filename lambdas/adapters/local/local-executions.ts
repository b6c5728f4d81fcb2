import { hostname } from 'node:os';
import type { ExecutionsPort, HolderState } from '../../ports/executions';

/** How a local execution's name ends: the process that runs it, on which machine. */
const MARK = /~pid(\d+)~([A-Za-z0-9.-]+)$/;

const thisHost = () => hostname().replace(/[^A-Za-z0-9.-]/g, '-') || 'localhost';

/**
 * What the local runner knows about its executions: those running in this process (registered
 * by LocalStateMachines while they run), and, for any other, the process and machine its name
 * carries. A holder whose execution has ended in this process, or whose process has gone on this
 * machine, is dead; one on another machine (two rehearsals against one staging V2) cannot be told
 * and is left to the lock's time to live. A process id reused since would only make a dead
 * holder look alive, which is the safe mistake.
 */
export class LocalExecutions implements ExecutionsPort {
  private readonly running = new Set<string>();

  /** The end of a local execution's name that identifies this process. */
  mark(): string {
    return `~pid${process.pid}~${thisHost()}`;
  }

  started(executionId: string): void {
    this.running.add(executionId);
  }

  ended(executionId: string): void {
    this.running.delete(executionId);
  }

  async holderState(holder: string): Promise<HolderState> {
    if (this.running.has(holder)) return { alive: true, status: 'RUNNING' };
    const match = MARK.exec(holder);
    if (!match) return { alive: undefined, status: 'not a local execution' };
    const [, pidText, host] = match;
    if (host !== thisHost()) return { alive: undefined, status: `runs on another machine (${host})` };
    const pid = Number(pidText);
    if (pid === process.pid) return { alive: false, status: 'ENDED (no longer running in this process)' };
    try {
      process.kill(pid, 0);
      return { alive: true, status: `RUNNING (process ${pid})` };
    } catch (error) {
      // EPERM: the process exists but belongs to someone else.
      if ((error as { code?: string }).code === 'EPERM')
        return { alive: true, status: `RUNNING (process ${pid})` };
      return { alive: false, status: `PROCESS_GONE (process ${pid} has exited)` };
    }
  }
}

/** This process's registry, shared by every LocalStateMachines (ids are unique). */
export const localExecutions = new LocalExecutions();
