import { LocalAlarms } from '../../../../lambdas/adapters/local/local-alarms';

describe('LocalAlarms', () => {
  it('starts healthy', async () => {
    expect(await new LocalAlarms().firing()).toEqual([]);
  });

  it('reports raised alarms in the order raised, with their reasons', async () => {
    const alarms = new LocalAlarms();
    alarms.raise('Dlq', 'a window failed');
    alarms.raise('Errors', 'error rate 5%');

    expect(await alarms.firing()).toEqual([
      { name: 'Dlq', state: 'ALARM', reason: 'a window failed' },
      { name: 'Errors', state: 'ALARM', reason: 'error rate 5%' },
    ]);
  });

  it('raising again updates the reason and keeps one entry', async () => {
    const alarms = new LocalAlarms();
    alarms.raise('Dlq', 'first');
    alarms.raise('Dlq', 'second');

    expect(await alarms.firing()).toEqual([{ name: 'Dlq', state: 'ALARM', reason: 'second' }]);
  });

  it('clears one alarm by name, or all', async () => {
    const alarms = new LocalAlarms();
    alarms.raise('A', 'a');
    alarms.raise('B', 'b');
    alarms.clear('A');
    alarms.clear('not-raised');
    expect((await alarms.firing()).map((a) => a.name)).toEqual(['B']);

    alarms.clear();
    expect(await alarms.firing()).toEqual([]);
  });
});
