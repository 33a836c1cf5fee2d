/**
 * AIDC Hub inside JupyterLab: the workspace's tenant, the GPUs it holds and the GPU-hours left
 * in the status bar, and every warning of the hub (a server about to be stopped, why one was
 * stopped, a GPU-hour budget used up) as a JupyterLab notification, once each.
 *
 * It reads `aidc/workspace` of this Jupyter server (aidc_jupyterlab/handlers.py), which asks the
 * quotas service with the workspace's own token: the page never holds a hub token, and the
 * service answers for this server's owner only.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

const PLUGIN_ID = 'aidc-hub-lab:plugin';
const INTERVAL_MS = 60_000; // a hub warning shows within a minute
const SHOWN_KEY = 'aidc-hub-lab:shown';
// JupyterLab cuts a toast's message at 140 characters: longer ones get a button with the whole text
const TOAST_LIMIT = 140;

interface Notice {
  level: string;
  text: string;
}

interface Workspace {
  configured?: boolean;
  user: string;
  server: string;
  running: boolean;
  tenant: { id: string; display_name: string } | null;
  profile: string | null;
  gpus: Record<string, number>;
  borrowed: Record<string, number>;
  budget: {
    gpu_hours_left: string | null;
    period: string;
    period_resets: string;
    spent: string[];
  } | null;
  notices: Notice[];
  message?: string;
}

/** "2 × H100, 1 × A100"; "no GPU" when none. */
export function gpuWords(gpus: Record<string, number>): string {
  const parts = Object.entries(gpus)
    .filter(([, n]) => n > 0)
    .map(([type, n]) => `${n} × ${type}`);
  return parts.length ? parts.join(', ') : 'no GPU';
}

/** The status bar's text: "snu-ai · 2 × H100 · 120 GPU-h left". */
export function statusText(ws: Workspace): string {
  if (!ws.running || !ws.tenant) {
    return 'AIDC Hub: no tenant';
  }
  const parts = [ws.tenant.id, gpuWords(ws.gpus)];
  const left = ws.budget?.gpu_hours_left;
  parts.push(left === null || left === undefined ? 'no GPU-hour budget' : `${left} GPU-h left`);
  return parts.join(' · ');
}

/**
 * What identifies a warning across polls: its text without the countdown ("(in 4 min 30 s)"),
 * which changes every minute while the warning stays the same.
 */
export function noticeKey(level: string, text: string): string {
  return `${level}:${text.replace(/\s*\(in [^)]*\)/g, '')}`;
}

class Status extends Widget {
  constructor() {
    super();
    this.addClass('aidc-hub-status');
    this.node.textContent = 'AIDC Hub';
  }

  showWorkspace(ws: Workspace): void {
    this.node.textContent = statusText(ws);
    const lines = [];
    if (ws.tenant) {
      lines.push(`Tenant: ${ws.tenant.display_name} (${ws.tenant.id})`);
      lines.push(`GPUs held: ${gpuWords(ws.gpus)}` + (Object.keys(ws.borrowed).length ? ` (borrowed: ${gpuWords(ws.borrowed)})` : ''));
    }
    if (ws.budget) {
      const left = ws.budget.gpu_hours_left;
      lines.push(left === null ? 'No GPU-hour budget applies' : `GPU-hours left ${ws.budget.period}: ${left} (resets ${ws.budget.period_resets})`);
    }
    this.node.title = lines.join('\n');
    this.toggleClass('aidc-hub-spent', !!ws.budget && ws.budget.spent.length > 0);
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The workspace tenant, GPUs and GPU-hours left, and the hub warnings, from the AIDC Hub quotas service',
  autoStart: true,
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null) => {
    const settings = ServerConnection.makeSettings();
    const url = URLExt.join(settings.baseUrl, 'aidc', 'workspace');
    const status = new Status();
    if (statusBar) {
      statusBar.registerStatusItem(PLUGIN_ID, { item: status, align: 'left', rank: 1000 });
    }
    // warnings shown already (this browser, this server), and the notification showing each now
    const shownKey = `${SHOWN_KEY}:${settings.baseUrl}`;
    const shown = new Set<string>(JSON.parse(window.localStorage.getItem(shownKey) || '[]'));
    const live = new Map<string, string>();

    const notify = (level: string, text: string): void => {
      const key = noticeKey(level, text);
      const id = live.get(key);
      if (id !== undefined) {
        Notification.update({ id, message: text }); // the countdown moves on
        return;
      }
      if (shown.has(key)) {
        return;
      }
      shown.add(key);
      window.localStorage.setItem(shownKey, JSON.stringify([...shown].slice(-100)));
      const details = {
        label: 'Details',
        caption: 'The whole message: why, and what to do',
        callback: (): void => {
          void showDialog({ title: 'AIDC Hub', body: text, buttons: [Dialog.okButton()] });
        }
      };
      const options = { autoClose: false as const, actions: text.length > TOAST_LIMIT ? [details] : [] };
      live.set(key, level === 'warning' ? Notification.warning(text, options) : Notification.info(text, options));
    };

    const poll = async (): Promise<void> => {
      let ws: Workspace;
      try {
        const response = await ServerConnection.makeRequest(url, {}, settings);
        ws = await response.json();
        if (!response.ok) {
          status.node.textContent = 'AIDC Hub: unavailable';
          status.node.title = ws.message || `HTTP ${response.status}`;
          return;
        }
      } catch (reason) {
        status.node.textContent = 'AIDC Hub: unavailable';
        status.node.title = String(reason);
        return;
      }
      if (ws.configured === false) {
        status.node.textContent = 'AIDC Hub: not in a hub';
        return;
      }
      status.showWorkspace(ws);
      for (const notice of ws.notices) {
        notify(notice.level, notice.text);
      }
      for (const text of ws.budget?.spent ?? []) {
        notify('warning', `GPU-hour budget used up: ${text}`);
      }
    };

    void app.restored.then(() => {
      void poll();
      window.setInterval(() => void poll(), INTERVAL_MS);
    });
  }
};

export default plugin;
