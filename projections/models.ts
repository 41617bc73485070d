// The read models a client may ask the node agent for, by name.
import { auditModel } from './audit.js';
import { checkpointsModel } from './checkpoints.js';
import { jobsModel, membershipModel } from './jobs.js';
import type { ReadModel } from './read-model.js';
import { restartsModel } from './restarts.js';

export const readModels: Readonly<Record<string, ReadModel<any>>> = {
  [jobsModel.name]: jobsModel,
  [membershipModel.name]: membershipModel,
  [checkpointsModel.name]: checkpointsModel,
  [restartsModel.name]: restartsModel,
  [auditModel.name]: auditModel,
};
