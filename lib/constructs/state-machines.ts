import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import type { MigrationStack, StateMachinesFactory } from '../migration-stack';
import { LAMBDA_ENV } from '../runtime-contract';
import { ExecutionEndRule } from './execution-end-rule';
import { OrchestratorTasks } from './orchestrator-tasks';
import { rollbackDefinition } from './rollback-definition';

export { RETRYABLE_ERRORS } from './orchestrator-tasks';

/** How long the Migration state machine waits between progress polls. @default 30 s */
export const DEFAULT_POLL_INTERVAL = Duration.seconds(30);
/** How long it waits between checks of an archive snapshot. @default 60 s */
export const DEFAULT_ARCHIVE_POLL_INTERVAL = Duration.seconds(60);
/** How long a held cutover waits before looking again. @default 60 s */
export const DEFAULT_HOLD_POLL_INTERVAL = Duration.seconds(60);
/** How long the rollback from the write switch waits between looks at the repair queue. @default 15 s */
export const DEFAULT_DRAIN_POLL_INTERVAL = Duration.seconds(15);

export interface MigrationStateMachinesProps {
  /** The orchestrator Lambda every task calls (lambdas/handlers/orchestrator.ts). */
  readonly orchestrator: lambda.IFunction;
  /**
   * Wait between polls of backfill and verification progress.
   * @default DEFAULT_POLL_INTERVAL
   */
  readonly pollInterval?: Duration;
  /**
   * Wait between archive snapshot checks.
   * @default DEFAULT_ARCHIVE_POLL_INTERVAL
   */
  readonly archivePollInterval?: Duration;
  /**
   * Wait while a cutover is held.
   * @default DEFAULT_HOLD_POLL_INTERVAL
   */
  readonly holdPollInterval?: Duration;
  /**
   * Wait between looks at the repair queue while a rollback from the write switch drains it.
   * @default DEFAULT_DRAIN_POLL_INTERVAL
   */
  readonly drainPollInterval?: Duration;
  /**
   * Execution history log retention.
   * @default logs.RetentionDays.THREE_MONTHS
   */
  readonly logRetention?: logs.RetentionDays;
}

/** The execution input asks for `action` (`{"action": …}`, kept under `$.request`). */
const requested = (action: string) => sfn.Condition.stringEquals('$.request.action', action);

/**
 * The three state machines ops drive from the Step Functions console (JSONPath, so that they
 * also run locally): Migration (phases 1–3 and 5, with Wait/poll loops), Cutover (the traffic
 * schedule with its health gate, and the write switch) and Rollback (the writes back to V1 first
 * when they were switched, then the reads). Each starts by validating its input, logs ALL
 * events to CloudWatch Logs and traces with X-Ray. State names read as the console graph.
 */
export class MigrationStateMachines extends Construct {
  public readonly migration: sfn.StateMachine;
  public readonly cutover: sfn.StateMachine;
  public readonly rollback: sfn.StateMachine;

  private readonly props: MigrationStateMachinesProps;
  private readonly tasks: OrchestratorTasks;

  constructor(scope: Construct, id: string, props: MigrationStateMachinesProps) {
    super(scope, id);
    this.props = props;
    this.tasks = new OrchestratorTasks(this, props.orchestrator);
    const poll = props.pollInterval ?? DEFAULT_POLL_INTERVAL;
    if (poll.toSeconds() < 1) throw new Error(`${this.node.path}: pollInterval must be at least 1 second`);

    this.rollback = this.machine(
      'Rollback',
      rollbackDefinition(this, this.tasks, props.drainPollInterval ?? DEFAULT_DRAIN_POLL_INTERVAL),
    );
    this.migration = this.machine(
      'Migration',
      this.migrationDefinition(poll, props.archivePollInterval ?? DEFAULT_ARCHIVE_POLL_INTERVAL),
    );
    this.cutover = this.machine(
      'Cutover',
      this.cutoverDefinition(props.holdPollInterval ?? DEFAULT_HOLD_POLL_INTERVAL),
    );
  }

  private machine(name: string, definition: sfn.IChainable): sfn.StateMachine {
    const logGroup = new logs.LogGroup(this, `${name}Logs`, {
      retention: this.props.logRetention ?? logs.RetentionDays.THREE_MONTHS,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    return new sfn.StateMachine(this, `${name}StateMachine`, {
      definitionBody: sfn.DefinitionBody.fromChainable(definition),
      stateMachineType: sfn.StateMachineType.STANDARD,
      tracingEnabled: true,
      logs: { destination: logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
      comment: `IoT V1 → V2 migration: ${name}`,
    });
  }

  /** A final state named `stateName`; with `outputPath`, the execution's output is that part of its state. */
  private succeed(id: string, stateName: string, outputPath?: string): sfn.Succeed {
    return new sfn.Succeed(this, id, { stateName, outputPath });
  }

  private migrationDefinition(poll: Duration, archivePoll: Duration): sfn.IChainable {
    const { validate } = this.tasks.validation('Migration', 'validate-migration-input');
    const failed = this.tasks.failurePath('Migration');
    const named = this.tasks.guardedTask(failed);

    const status = named('GetStatus', 'Report status', 'status', '$.status');
    const acquire = named('AcquireLock', 'Take the migration lock', 'begin', '$.plan', {
      'request.$': '$.request',
    });
    const nextPhase = named('NextPhase', 'Find the next phase', 'next-phase', '$.next', {
      'target.$': '$.plan.target',
    });
    const release = named('ReleaseLock', 'Release the lock', 'release', null);
    const done = this.succeed('MigrationDone', 'Done');
    release.next(done);

    const prepare = named(
      'Prepare',
      'Phase 1: back up V1, deploy V2, default tenant',
      'prepare',
      '$.prepare',
    );
    prepare.next(nextPhase);

    const startBackfill = named(
      'StartBackfill',
      'Phase 2: dual-write on, plan and send windows',
      'start-backfill',
      '$.backfill',
    );
    const pollBackfill = named('PollBackfill', 'Check backfill progress', 'poll-backfill', '$.backfill');
    const waitBackfill = new sfn.Wait(this, 'WaitForBackfill', {
      stateName: 'Wait for the backfill',
      time: sfn.WaitTime.duration(poll),
    });
    const backfillDone = new sfn.Choice(this, 'BackfillDone', { stateName: 'Backfill complete?' })
      .when(sfn.Condition.booleanEquals('$.backfill.complete', true), nextPhase)
      .otherwise(waitBackfill);
    startBackfill.next(backfillDone);
    waitBackfill.next(pollBackfill);
    pollBackfill.next(backfillDone);

    const startVerify = named(
      'StartVerification',
      'Phase 3: verify every window',
      'start-verify',
      '$.verify',
    );
    const pollVerify = named(
      'PollVerification',
      'Check verification (repair when done)',
      'poll-verify',
      '$.verify',
      {
        'runId.$': '$.verify.runId',
      },
    );
    const waitVerify = new sfn.Wait(this, 'WaitForVerification', {
      stateName: 'Wait for the verification',
      time: sfn.WaitTime.duration(poll),
    });
    const verifyDone = new sfn.Choice(this, 'VerificationDone', { stateName: 'Verification complete?' })
      .when(sfn.Condition.booleanEquals('$.verify.complete', true), nextPhase)
      .otherwise(waitVerify);
    startVerify.next(verifyDone);
    waitVerify.next(pollVerify);
    pollVerify.next(verifyDone);

    // The execution input's `confirm` (RENAME V1 TABLES) reaches both cleanup steps.
    const startCleanup = named(
      'StartCleanup',
      'Phase 5: stop dual-write, archive V1',
      'start-cleanup',
      '$.cleanup',
      { 'request.$': '$.request' },
    );
    const waitArchive = new sfn.Wait(this, 'WaitForArchive', {
      stateName: 'Wait for the archive',
      time: sfn.WaitTime.duration(archivePoll),
    });
    const checkArchive = named('CheckArchive', 'Check the archive', 'archive-status', '$.cleanup', {
      'archive.$': '$.cleanup.archive',
    });
    const finishCleanup = named(
      'FinishCleanup',
      'Check the archive, rename V1 tables',
      'finish-cleanup',
      '$.cleanupResult',
      {
        'archive.$': '$.cleanup.archive',
        'request.$': '$.request',
      },
    );
    const archiveFailed = new sfn.Pass(this, 'ArchiveFailed', {
      stateName: 'Archive failed',
      parameters: { Error: 'BackupError', Cause: 'The V1 archive snapshot failed' },
      resultPath: '$.error',
    });
    archiveFailed.next(failed);
    const archiveReady = new sfn.Choice(this, 'ArchiveReady', { stateName: 'Archive available?' })
      .when(sfn.Condition.stringEquals('$.cleanup.status', 'available'), finishCleanup)
      .when(sfn.Condition.stringEquals('$.cleanup.status', 'failed'), archiveFailed)
      .otherwise(waitArchive);
    startCleanup.next(waitArchive);
    waitArchive.next(checkArchive);
    checkArchive.next(archiveReady);
    finishCleanup.next(nextPhase);

    const cutoverElsewhere = new sfn.Pass(this, 'CutoverRunsSeparately', {
      stateName: 'Cutover is next',
      parameters: {
        Error: 'CutoverIsNext',
        Cause:
          'Phase 4 runs in the Cutover state machine: start it with {"action":"run"}, then advance again',
      },
      resultPath: '$.error',
    });
    cutoverElsewhere.next(failed);

    const route = new sfn.Choice(this, 'RouteToPhase', { stateName: 'Which phase?' })
      .when(sfn.Condition.stringEquals('$.next.phase', 'PREPARE'), prepare)
      .when(sfn.Condition.stringEquals('$.next.phase', 'BACKFILL'), startBackfill)
      .when(sfn.Condition.stringEquals('$.next.phase', 'VERIFY'), startVerify)
      .when(sfn.Condition.stringEquals('$.next.phase', 'CUTOVER'), cutoverElsewhere)
      .when(sfn.Condition.stringEquals('$.next.phase', 'CLEANUP'), startCleanup)
      .otherwise(release);
    nextPhase.next(route);
    acquire.next(nextPhase);

    const throttle = named('ChangeThrottle', 'Change the backfill throttle', 'throttle', '$.throttle', {
      'request.$': '$.request',
    });
    // Failed backfill windows back to the workers (`migrate redrive`): no lock, as the throttle.
    const redrive = named('RedriveWindows', 'Redrive failed backfill windows', 'redrive', '$.redrive');
    // Dropping the archived V1 tables: under the lock, with its confirmation (DROP V1 ARCHIVES).
    const acquireForDrop = named('AcquireLockForDrop', 'Take the lock to drop archives', 'begin', '$.plan', {
      'request.$': '$.request',
    });
    const drop = named('DropArchives', 'Drop the archived V1 tables', 'drop-archives', '$.dropped', {
      'request.$': '$.request',
    });
    const releaseAfterDrop = named(
      'ReleaseAfterDrop',
      'Release the lock (archives dropped)',
      'release',
      null,
    );
    acquireForDrop
      .next(drop)
      .next(releaseAfterDrop)
      .next(this.succeed('ArchivesDropped', 'Archives dropped', '$.dropped'));

    const action = new sfn.Choice(this, 'ChooseAction', { stateName: 'Which action?' })
      .when(requested('status'), status.next(this.succeed('StatusReported', 'Status reported', '$.status')))
      .when(
        requested('throttle'),
        throttle.next(this.succeed('ThrottleChanged', 'Throttle changed', '$.throttle')),
      )
      .when(
        requested('redrive'),
        redrive.next(this.succeed('WindowsRedriven', 'Windows redriven', '$.redrive')),
      )
      .when(requested('drop-archives'), acquireForDrop)
      .otherwise(acquire);
    return validate.next(action);
  }

  private cutoverDefinition(holdPoll: Duration): sfn.IChainable {
    const { validate } = this.tasks.validation('Cutover', 'validate-cutover-input');
    const failed = this.tasks.failurePath('Cutover');
    const named = this.tasks.guardedTask(failed);

    const hold = named('HoldCutover', 'Hold the cutover', 'hold', '$.result').next(
      this.succeed('Held', 'Held'),
    );
    const resume = named('ResumeCutover', 'Resume the cutover', 'resume', '$.result').next(
      this.succeed('Resumed', 'Resumed'),
    );
    const step = named('StepOneLevel', 'Step traffic one level', 'step', '$.result').next(
      this.succeed('Stepped', 'Stepped', '$.result'),
    );
    const switchWrites = named(
      'SwitchWrites',
      'Write switch: verify touched windows, V2 the write primary',
      'switch-writes',
      '$.result',
    ).next(this.succeed('WritesSwitchedToV2', 'Writes on V2', '$.result'));

    const start = named('StartCutover', 'Check guards, take the lock', 'start-cutover', '$.cutover');
    const nextLevel = named('NextLevel', 'Set the next traffic level', 'cutover-next', '$.level');
    const bake = new sfn.Wait(this, 'Bake', {
      stateName: 'Bake',
      time: sfn.WaitTime.secondsPath('$.level.bakeSeconds'),
    });
    const gate = named('HealthGate', 'Health gate: alarms and drift', 'health-gate', '$.gate');
    const complete = named('CompleteCutover', 'Cutover complete at 100 %', 'complete-cutover', '$.result');
    const release = named('CutoverReleaseLock', 'Release the lock', 'release', null);
    complete.next(release).next(this.succeed('CutoverDone', 'Traffic at 100 %'));

    const startRollback = new tasks.StepFunctionsStartExecution(this, 'StartRollback', {
      stateName: 'Start the Rollback',
      stateMachine: this.rollback,
      input: sfn.TaskInput.fromJsonPathAt('$.gate.rollbackInput'),
      resultPath: '$.rollbackExecution',
    });
    startRollback.addCatch(failed, { errors: ['States.ALL'], resultPath: '$.error' });
    const releaseAfterRollback = named(
      'ReleaseAfterRollback',
      'Release the lock after rollback',
      'release',
      null,
    );
    startRollback.next(releaseAfterRollback).next(
      new sfn.Fail(this, 'GateFailed', {
        stateName: 'Rolled back by the health gate',
        error: 'HealthGateFailed',
        causePath: '$.gate.reason',
      }),
    );

    const releaseRolledBack = named('ReleaseRolledBack', 'Release the lock (rolled back)', 'release', null);
    releaseRolledBack.next(
      new sfn.Fail(this, 'CutoverRolledBack', {
        stateName: 'Rolled back meanwhile',
        error: 'CutoverRolledBack',
        cause: 'A rollback set traffic to 0 % while the cutover ran',
      }),
    );

    const waitHeld = new sfn.Wait(this, 'WaitWhileHeld', {
      stateName: 'Held: wait',
      time: sfn.WaitTime.duration(holdPoll),
    });
    waitHeld.next(nextLevel);
    const isLast = new sfn.Choice(this, 'IsLastLevel', { stateName: 'Last level?' })
      .when(sfn.Condition.booleanEquals('$.level.last', true), complete)
      .otherwise(nextLevel);
    const healthy = new sfn.Choice(this, 'Healthy', { stateName: 'Healthy?' })
      .when(sfn.Condition.booleanEquals('$.gate.healthy', true), isLast)
      .when(sfn.Condition.booleanEquals('$.gate.rolledBack', true), releaseRolledBack)
      .otherwise(startRollback);
    const levelState = new sfn.Choice(this, 'LevelState', { stateName: 'Level set?' })
      .when(sfn.Condition.stringEquals('$.level.state', 'applied'), bake)
      .when(sfn.Condition.stringEquals('$.level.state', 'held'), waitHeld)
      .when(sfn.Condition.stringEquals('$.level.state', 'rolled-back'), releaseRolledBack)
      .otherwise(complete);
    start.next(nextLevel);
    nextLevel.next(levelState);
    bake.next(gate);
    gate.next(healthy);

    const action = new sfn.Choice(this, 'ChooseCutoverAction', { stateName: 'Which action?' })
      .when(requested('hold'), hold)
      .when(requested('resume'), resume)
      .when(requested('step'), step)
      .when(requested('switch-writes'), switchWrites)
      .otherwise(start);
    return validate.next(action);
  }
}

/**
 * The stack's state machines: builds MigrationStateMachines on the stack's orchestrator and
 * gives the orchestrator what the health gate needs (the MigrationHealth alarm's name and the
 * right to describe alarms).
 */
export const migrationStateMachines: StateMachinesFactory = (stack: MigrationStack) => {
  const orchestrator = stack.orchestrator.function;
  const machines = new MigrationStateMachines(stack, 'StateMachines', { orchestrator });
  orchestrator.addEnvironment(LAMBDA_ENV.healthAlarmName, stack.alarms.health.alarmName);
  orchestrator.addToRolePolicy(
    new iam.PolicyStatement({
      // The gate reads the MigrationHealth composite alarm: DescribeAlarms returns composite
      // alarms only to a permission scoped to `*` (CloudWatch API reference, DescribeAlarms).
      actions: ['cloudwatch:DescribeAlarms'],
      resources: ['*'],
    }),
  );
  // A stopped execution (no Catch runs) still has its end recorded and its lock released.
  new ExecutionEndRule(stack, 'ExecutionEnds', {
    orchestrator,
    stateMachines: [machines.migration, machines.cutover, machines.rollback],
  });
  const orchestratorLogicalId = stack.getLogicalId(orchestrator.node.defaultChild as lambda.CfnFunction);
  for (const machine of [machines.migration, machines.cutover, machines.rollback]) {
    Validations.of(machine).acknowledge(
      {
        id: `AwsSolutions-IAM5[Resource::<${orchestratorLogicalId}.Arn>:*]`,
        reason: 'LambdaInvoke grants invoking the orchestrator and its versions (`<arn>:*`), nothing else',
      },
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          'X-Ray tracing (PutTraceSegments, PutTelemetryRecords, GetSamplingRules, GetSamplingTargets) and the ' +
          'CloudWatch Logs delivery of the execution logs (CreateLogDelivery, GetLogDelivery, UpdateLogDelivery, ' +
          'DeleteLogDelivery, ListLogDeliveries, PutResourcePolicy, DescribeResourcePolicies, DescribeLogGroups) ' +
          'support no resource-level permissions',
      },
    );
  }
  Validations.of(stack.orchestrator).acknowledge({
    id: 'AwsSolutions-IAM5[Resource::*]',
    reason:
      'cloudwatch:DescribeAlarms: the health gate reads the MigrationHealth composite alarm, and DescribeAlarms ' +
      'returns composite alarms only when the permission is scoped to * (a narrower scope returns metric alarms ' +
      'only); X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions',
  });
  return {
    migration: machines.migration,
    cutover: machines.cutover,
    rollback: machines.rollback,
    all: [machines.migration, machines.cutover, machines.rollback],
  };
};
