import type { Duration } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
import type { OrchestratorTasks } from './orchestrator-tasks';

/**
 * The Rollback state machine: input validated, then the writes back to V1 first when they were
 * switched (writesRollback), then traffic to 0 % with dual-write kept on. Its constructs are made
 * in `scope` (the MigrationStateMachines construct), so their ids are the state machines' own.
 */
export function rollbackDefinition(
  scope: Construct,
  tasks: OrchestratorTasks,
  drainPoll: Duration,
): sfn.IChainable {
  const { validate } = tasks.validation('Rollback', 'validate-rollback-input');
  const failed = tasks.failurePath('Rollback');
  const rollback = tasks.task(
    'RollbackTraffic',
    'Traffic to 0 %, dual-write stays on',
    'rollback',
    '$.result',
    {
      'request.$': '$.request',
    },
  );
  rollback.addCatch(failed, { errors: ['States.ALL'], resultPath: '$.error' });
  rollback.next(
    new sfn.Succeed(scope, 'RolledBack', { stateName: 'Traffic rolled back', outputPath: '$.result' }),
  );
  return validate.next(writesRollback(scope, tasks, failed, rollback, drainPoll));
}

/**
 * The rollback's first part when the writes were switched to V2: drain the repair queue,
 * refuse rows V1 cannot take and check the windows touched since the switch (repairing V1
 * from V2), then the writes back to V1; then `reads` (traffic to 0 %). Straight to `reads`
 * when V1 is still the write primary.
 */
function writesRollback(
  scope: Construct,
  tasks: OrchestratorTasks,
  failed: sfn.IChainable,
  reads: sfn.IChainable,
  drainPoll: Duration,
): sfn.IChainable {
  const named = tasks.guardedTask(failed);
  const request = { 'request.$': '$.request' };
  const plan = named('RollbackWritesPlan', 'Writes on V2?', 'rollback-writes-plan', '$.writes', request);
  const start = new sfn.Pass(scope, 'StartDrain', {
    stateName: 'Start draining the repair queue',
    result: sfn.Result.fromObject({}),
    resultPath: '$.drain',
  });
  const drain = named('DrainRepairQueue', 'Drain the repair queue', 'drain-repair-queue', '$.drain', {
    ...request,
    'drain.$': '$.drain',
  });
  const wait = new sfn.Wait(scope, 'WaitForRepairQueue', {
    stateName: 'Wait for the repair queue',
    time: sfn.WaitTime.duration(drainPoll),
  });
  const check = named(
    'CheckWrites',
    'Check touched windows, repair V1 from V2',
    'check-writes',
    '$.writesCheck',
    request,
  );
  const back = named(
    'SwitchWritesBack',
    'Writes back to V1 first',
    'switch-writes-back',
    '$.writesBack',
    request,
  );
  const drained = new sfn.Choice(scope, 'RepairQueueDrained', { stateName: 'Repair queue drained?' })
    .when(sfn.Condition.booleanEquals('$.drain.drained', true), check)
    .otherwise(wait);
  start.next(drain).next(drained);
  wait.next(drain);
  check.next(back).next(reads);
  const switched = new sfn.Choice(scope, 'WritesSwitched', { stateName: 'Writes switched to V2?' })
    .when(sfn.Condition.booleanEquals('$.writes.switched', true), start)
    .otherwise(reads);
  return plan.next(switched);
}
