// A node's part of what concerns a committed version as a whole, on this node's own images root
// only: removing its part of a pruned version, and checking its images when another node asks
// (`ckpt audit --verify` there). Each returns its done event or throws (JobWork records the failure).
import { describeProblems, listVersions, readManifest, removeVersion } from '../../images/image-store.js';
import { verifyVersionSized } from '../../images/verify-worker.js';
import type { CheckpointWorkOptions } from '../job-work.js';
import { done, type ImageStep, type StepHandler, type StepsOf } from './step.js';

export class ImageSteps implements StepsOf<ImageStep> {
  readonly #o: CheckpointWorkOptions;

  constructor(options: CheckpointWorkOptions) {
    this.#o = options;
  }

  /**
   * Removes this node's part of a version the coordinator decided to prune (the manifest first, so
   * a crash leaves an uncommitted leftover, never a committed version with files missing), and the
   * leftovers of aborted checkpoints older than it: no node keeps orphans. Again after a crash: what
   * is gone already counts 0 bytes.
   */
  readonly prune: StepHandler<'prune'> = async (c, { job }) => {
    const root = this.#o.imagesRoot;
    const on = listVersions(root, job);
    const bytes = on.find((v) => v.version === c.version)?.bytes ?? 0;
    for (const version of [c.version, ...on.filter((v) => !v.committed && v.version < c.version).map((v) => v.version)]) {
      try {
        removeVersion(root, job, version);
      } catch (error) {
        // Nodes sharing an images filesystem remove the same directory: gone is what was asked.
        if (listVersions(root, job).some((v) => v.version === version)) throw error;
      }
    }
    this.#o.log(`pruned this node's part of v${c.version} of ${job} (${bytes} bytes)`);
    return done(c, { bytes });
  };

  /** This node's images of the version against its manifest, and the manifest against this node's digest in the log. */
  readonly 'images-audit': StepHandler<'images-audit'> = async (c, { job, progress: w }) => {
    const root = this.#o.imagesRoot;
    const version = w.commands.versions[c.version];
    const manifestSha256 = version?.manifests?.[c.node];
    if (!version?.manifests) throw new Error(`v${c.version} of ${job} is not a committed version (ckpt checkpoints ${job} lists them)`);
    if (!manifestSha256) throw new Error(`v${c.version} of ${job} has no units on ${c.node}`);
    const pruned = w.state.restart.versions[c.version] === undefined;
    if (!readManifest(root, job, c.version))
      throw new Error(pruned ? `v${c.version} of ${job} was pruned: its images on ${c.node} are gone` : `v${c.version} of ${job} has no manifest on ${c.node}: its images there are gone`);
    const bytes = Object.values(version.dumps).reduce((n, d) => n + d.bytes, 0);
    const checked = await verifyVersionSized(bytes, root, job, c.version, { manifestSha256 });
    if (!checked.ok) throw new Error(describeProblems(root, job, c.version, checked.problems));
    return done(c, { files: checked.files, bytes: checked.bytes });
  };
}
