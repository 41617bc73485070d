// The read models a client may ask the node agent for, by name.
import { auditModel } from './audit.js';
import { checkpointsModel } from './checkpoints.js';
import { jobInfoModel, jobsModel, liveMembershipModel, membershipModel } from './jobs.js';
import { nodesModel } from './nodes.js';
import type { ReadModel } from './read-model.js';
import { restartsModel } from './restarts.js';

// biome-ignore lint/suspicious/noExplicitAny: models of different states in one table; each is used through its own encode and decode
export const readModels: Readonly<Record<string, ReadModel<any>>> = {
  [jobsModel.name]: jobsModel,
  [membershipModel.name]: membershipModel,
  [liveMembershipModel.name]: liveMembershipModel,
  [jobInfoModel.name]: jobInfoModel,
  [checkpointsModel.name]: checkpointsModel,
  [restartsModel.name]: restartsModel,
  [auditModel.name]: auditModel,
  [nodesModel.name]: nodesModel,
};
