// Every command, loaded: for the usage and the reference (main.ts loads one at a time).
import type { Command } from './command.js';
import { init } from './init.js';
import { mount } from './mount.js';
import { unmount } from './unmount.js';
import { status } from './status.js';
import { config } from './config.js';
import { journal } from './journal.js';
import { snapshot, snapshots } from './snapshot.js';
import { diff } from './diff.js';
import { find } from './find.js';
import { exportCommand } from './export.js';
import { restore } from './restore.js';
import { prune } from './prune.js';
import { sync } from './sync.js';
import { verify } from './verify.js';
import { forget } from './forget.js';
import { serve } from './serve.js';
import { promote } from './promote.js';
import { demo } from './demo.js';

export const COMMANDS: Command[] = [init, mount, unmount, status, config, journal, snapshot, snapshots, diff, find, exportCommand, restore, prune, sync, verify, forget, serve, promote, demo];
