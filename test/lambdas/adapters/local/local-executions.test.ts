import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { LocalExecutions } from '../../../../lambdas/adapters/local/local-executions';

const id = (mark: string) => `arn:aws:states:local-1:000000000000:execution:migration:migration-1-abc${mark}`;

describe('LocalExecutions: what the local runner knows about lock holders', () => {
  it('calls its own running executions alive, and one that has ended in this process dead', async () => {
    const registry = new LocalExecutions();
    const mine = id(registry.mark());
    registry.started(mine);
    expect(await registry.holderState(mine)).toEqual({ alive: true, status: 'RUNNING' });
    registry.ended(mine);
    expect((await registry.holderState(mine)).alive).toBe(false);
  });

  it('tells a live process from one that was killed, by the process its execution names', async () => {
    const registry = new LocalExecutions();
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    await once(child, 'spawn');
    const theirs = id(registry.mark().replace(`~pid${process.pid}~`, `~pid${child.pid}~`));
    try {
      expect(await registry.holderState(theirs)).toEqual({
        alive: true,
        status: `RUNNING (process ${child.pid})`,
      });
    } finally {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    const state = await registry.holderState(theirs);
    expect(state.alive).toBe(false);
    expect(state.status).toMatch(/PROCESS_GONE/);
  });

  it('cannot tell about another machine’s executions or holders that are not executions', async () => {
    const registry = new LocalExecutions();
    expect((await registry.holderState(id('~pid1~some-other-host'))).alive).toBeUndefined();
    expect((await registry.holderState('rehearsal')).alive).toBeUndefined();
    expect((await registry.holderState('arn:aws:states:eu-west-1:1:execution:m:n')).alive).toBeUndefined();
  });
});
