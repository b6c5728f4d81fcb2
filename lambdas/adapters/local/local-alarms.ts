import type { AlarmPort, AlarmState } from '../../ports/alarms';

/**
 * The alarm port for rehearsals and tests: alarms are raised and cleared by hand, and
 * `firing` reports the raised ones in the order they were raised.
 */
export class LocalAlarms implements AlarmPort {
  private readonly raised = new Map<string, string>();

  /** Puts `name` in ALARM with `reason` (raising it again updates the reason). */
  raise(name: string, reason: string): void {
    this.raised.delete(name);
    this.raised.set(name, reason);
  }

  /** Returns `name` to OK, or every alarm when no name is given. */
  clear(name?: string): void {
    if (name === undefined) this.raised.clear();
    else this.raised.delete(name);
  }

  async firing(): Promise<AlarmState[]> {
    return [...this.raised].map(([name, reason]) => ({ name, state: 'ALARM', reason }));
  }
}
