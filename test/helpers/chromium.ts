/**
 * Headless Chromium for the browser tests: Debian's /usr/bin/chromium (found
 * by findTool; the tests that use it are skipped without it, and fail under
 * CI=true), driven by playwright-core, with the flags this machine needs (no
 * sandbox as root, no background networking: the closed network refuses it).
 */
import type { Browser } from 'playwright-core';
import { findTool } from './tools.js';

export const CHROMIUM = findTool('chromium');

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-component-update', '--no-first-run'];

/** Launches headless Chromium; call only where CHROMIUM was found (the describe is `needs('chromium')`). */
export async function launchChromium(): Promise<Browser> {
  if (!CHROMIUM) throw new Error('chromium is not installed');
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
}
