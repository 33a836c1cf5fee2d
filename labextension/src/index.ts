/**
 * AIDC Hub inside JupyterLab: the workspace's tenant, the GPUs it holds and the GPU-hours left
 * in the status bar, and every warning of the hub (a server about to be stopped, why one was
 * stopped, a GPU-hour budget used up) as a JupyterLab notification, once each.
 *
 * It reads `aidc/workspace` of this Jupyter server (aidc_jupyterlab/handlers.py), which asks the
 * quotas service with the workspace's own token: the page never holds a hub token, and the
 * service answers for this server's owner only. Every text it shows comes said in the person's
 * language from the service (`texts`, quotas/service/api_me.py): it writes none itself.
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

/**
 * Every text the extension shows, said by the quotas service in the person's language
 * (`api/me/workspace`'s `texts`): the extension composes no sentence of its own.
 */
interface Texts {
  status: string; // the status bar: "lab · 2 × H100 · 120 GPU-h left"
  summary: string[]; // its tooltip, one line each
  spent: string[]; // a notification per used-up GPU-hour budget
  details: string; // the button of a long notification, and its caption
  details_caption: string;
  dialog_title: string;
  unavailable: string; // the status bar while the service cannot be reached
}

interface Workspace {
  configured?: boolean;
  locale?: string;
  texts?: Texts;
  notices?: Notice[];
  message?: string;
}

/** The status bar's text before the first answer, and outside a hub: the product's name. */
const NAME = 'AIDC Hub';

/**
 * What identifies a warning across polls: its text without the countdown ("(in 4m 30s)",
 * "(4분 30초 후)"), which changes every minute while the warning stays the same.
 */
export function noticeKey(level: string, text: string): string {
  return `${level}:${text.replace(/\s*\((in [^)]*|[^)]*\d[^)]*후)\)/g, '')}`;
}

class Status extends Widget {
  constructor() {
    super();
    this.addClass('aidc-hub-status');
    this.node.textContent = NAME;
  }

  showTexts(texts: Texts, spent: boolean): void {
    this.node.textContent = texts.status;
    this.node.title = texts.summary.join('\n');
    this.toggleClass('aidc-hub-spent', spent);
  }

  showUnavailable(texts: Texts | null, why: string): void {
    this.node.textContent = texts ? texts.unavailable : `${NAME} ⚠`;
    this.node.title = why;
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
    let texts: Texts | null = null; // the last texts the service said, for the times it cannot answer

    const notify = (level: string, text: string, said: Texts): void => {
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
        label: said.details,
        caption: said.details_caption,
        callback: (): void => {
          void showDialog({ title: said.dialog_title, body: text, buttons: [Dialog.okButton()] });
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
          status.showUnavailable(texts, ws.message || String(response.status));
          return;
        }
      } catch (reason) {
        status.showUnavailable(texts, String(reason));
        return;
      }
      if (!ws.texts) {
        // outside a hub (`configured: false`): the server extension's own words, if any
        status.node.textContent = ws.message || NAME;
        return;
      }
      texts = ws.texts;
      status.showTexts(ws.texts, ws.texts.spent.length > 0);
      for (const notice of ws.notices ?? []) {
        notify(notice.level, notice.text, ws.texts);
      }
      for (const text of ws.texts.spent) {
        notify('warning', text, ws.texts);
      }
    };

    void app.restored.then(() => {
      void poll();
      window.setInterval(() => void poll(), INTERVAL_MS);
    });
  }
};

export default plugin;
