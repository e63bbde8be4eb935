const page = document.body.dataset;
const conn = document.getElementById('conn');
function swap(id, html) { const el = document.getElementById(id); if (el && html !== undefined) el.innerHTML = html; }
function live(url, apply) {
  const source = new EventSource(url);
  source.onopen = () => { conn.textContent = 'live'; };
  source.onerror = () => { conn.textContent = 'reconnecting...'; };
  source.onmessage = (e) => apply(JSON.parse(e.data));
}
if (page.stream) live(page.stream, (d) => {
  for (const [id, html] of Object.entries(d.parts || {})) swap(id, html);
  for (const [i, html] of Object.entries(d.tasks || {})) {
    const row = document.getElementById('t' + i); if (row) row.outerHTML = html;
  }
});
document.addEventListener('click', async (e) => {
  const button = e.target.closest('button[data-action]');
  if (!button || (button.dataset.confirm && !confirm(button.dataset.confirm))) return;
  button.disabled = true;
  const answer = await fetch(button.dataset.action, {method: 'POST', body: button.dataset.body || '{}',
    headers: {'content-type': 'application/json', 'x-taskfan-console': '1'}});
  const said = await answer.json().catch(() => ({error: answer.statusText}));
  document.getElementById('message').textContent = said.message || said.error || '';
  if (said.location) window.location = said.location; else button.disabled = false;
});
