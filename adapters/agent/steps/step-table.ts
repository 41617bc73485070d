// Every step a node agent executes, by name: the table JobWork looks a command's handler up in.
import type { CheckpointWorkOptions } from '../job-work.js';
import { CheckpointSteps } from './checkpoint-steps.js';
import type { FrozenUnits } from './frozen-units.js';
import { ImageSteps } from './image-steps.js';
import { RestartSteps } from './restart-steps.js';
import type { StepTable } from './step.js';

export const stepTable = (options: CheckpointWorkOptions, frozen: FrozenUnits): StepTable => {
  const checkpoint = new CheckpointSteps(options, frozen);
  const restart = new RestartSteps(options);
  const images = new ImageSteps(options);
  return {
    freeze: checkpoint.freeze,
    dump: checkpoint.dump,
    verify: checkpoint.verify,
    thaw: checkpoint.thaw,
    stop: checkpoint.stop,
    abort: checkpoint.abort,
    commit: checkpoint.commit,
    prune: images.prune,
    'images-audit': images['images-audit'],
    'images-verify': restart['images-verify'],
    'restore-prepare': restart['restore-prepare'],
    restore: restart.restore,
    rollback: restart.rollback,
  };
};
