import { GetParameterCommand, ParameterNotFound, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { SsmParameters } from '../../../lambdas/adapters/aws/ssm-parameters';
import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import { parameterNames } from '../../../lambdas/ports/parameters';

const names = parameterNames('/test/migration');

describe('SsmParameters', () => {
  const ssm = mockClient(SSMClient);
  const parameters = () => new SsmParameters(new SSMClient({ region: 'eu-west-1' }));

  beforeEach(() => ssm.reset());
  afterAll(() => ssm.restore());

  it('returns the stored value of the named parameter', async () => {
    ssm
      .on(GetParameterCommand, { Name: names.trafficPercentage })
      .resolves({ Parameter: { Name: names.trafficPercentage, Value: '25', Type: 'String' } });
    await expect(parameters().get(names.trafficPercentage)).resolves.toBe('25');
    expect(ssm.commandCalls(GetParameterCommand)[0].args[0].input).toEqual({ Name: names.trafficPercentage });
  });

  it('returns undefined when the parameter does not exist', async () => {
    ssm.on(GetParameterCommand).rejects(new ParameterNotFound({ message: 'not found', $metadata: {} }));
    await expect(parameters().get(names.dualWrite)).resolves.toBeUndefined();
  });

  it('rethrows any other failure, such as throttling', async () => {
    const throttled = Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
    ssm.on(GetParameterCommand).rejects(throttled);
    await expect(parameters().get(names.dualWrite)).rejects.toThrow(throttled);
  });

  it('writes a String parameter, overwriting the current value', async () => {
    ssm.on(PutParameterCommand).resolves({ Version: 3 });
    await parameters().put(names.trafficPercentage, '50');
    expect(ssm.commandCalls(PutParameterCommand).map((c) => c.args[0].input)).toEqual([
      { Name: names.trafficPercentage, Value: '50', Type: 'String', Overwrite: true },
    ]);
  });

  it('rethrows a failed write', async () => {
    ssm
      .on(PutParameterCommand)
      .rejects(Object.assign(new Error('denied'), { name: 'AccessDeniedException' }));
    await expect(parameters().put(names.dualWrite, 'off')).rejects.toThrow('denied');
  });
});

describe('MemoryParameters', () => {
  it('stores, overwrites, deletes and counts calls', async () => {
    const store = new MemoryParameters({ [names.dualWrite]: 'on' });
    await expect(store.get(names.dualWrite)).resolves.toBe('on');
    await store.put(names.dualWrite, 'off');
    await store.put(names.trafficPercentage, '10');
    await expect(store.get(names.dualWrite)).resolves.toBe('off');
    store.delete(names.trafficPercentage);
    await expect(store.get(names.trafficPercentage)).resolves.toBeUndefined();
    expect(store.entries()).toEqual({ [names.dualWrite]: 'off' });
    expect(store.calls).toEqual({ get: 3, put: 2 });
  });

  it('fails the injected number of calls of the chosen operation, then recovers', async () => {
    const store = new MemoryParameters({ [names.dualWrite]: 'on' });
    const outage = new Error('unreachable');
    store.failNext(outage, { op: 'get', times: 2 });
    await store.put(names.dualWrite, 'off');
    await expect(store.get(names.dualWrite)).rejects.toBe(outage);
    await expect(store.get(names.dualWrite)).rejects.toBe(outage);
    await expect(store.get(names.dualWrite)).resolves.toBe('off');
    expect(store.calls).toEqual({ get: 3, put: 1 });
  });

  it('does not change the value when a put fails', async () => {
    const store = new MemoryParameters({ [names.trafficPercentage]: '10' });
    store.failNext(new Error('throttled'));
    await expect(store.put(names.trafficPercentage, '50')).rejects.toThrow('throttled');
    await expect(store.get(names.trafficPercentage)).resolves.toBe('10');
  });
});
