// TaskPilot's dashboard: refreshes the live parts of a page and draws the throughput chart.
//
// Every page works without this file; it only keeps lists and counts current. It runs under
// a Content-Security-Policy without inline scripts or eval, so it wires everything up with
// event listeners, and htmx runs with allowEval off (no hx-on, no trigger filters).
(function () {
  'use strict';

  // How often the live parts ask the server again.
  var REFRESH_MS = 3000;
  // Whether live updates are paused, kept across pages in this browser.
  var PAUSED_KEY = 'taskpilot.live.paused';

  function paused() {
    try {
      return window.localStorage.getItem(PAUSED_KEY) === 'yes';
    } catch (e) {
      return false;
    }
  }

  function setPaused(value) {
    try {
      if (value) {
        window.localStorage.setItem(PAUSED_KEY, 'yes');
      } else {
        window.localStorage.removeItem(PAUSED_KEY);
      }
    } catch (e) {
      // Storage refused (private mode): the toggle still works for this page.
    }
    showToggle(value);
  }

  // A refresh must not pull text from under a selection or steal a half-typed filter.
  function busy() {
    var selection = window.getSelection ? window.getSelection() : null;
    if (selection && !selection.isCollapsed && String(selection).length > 0) {
      return true;
    }
    var focused = document.activeElement;
    return !!focused && focused.matches('input, select, textarea, [contenteditable]');
  }

  var pausedHere = false;

  function refresh() {
    if (pausedHere || paused() || busy() || document.hidden) {
      return;
    }
    document.querySelectorAll('[data-live]').forEach(function (region) {
      window.htmx.trigger(region, 'tp-refresh');
    });
  }

  function showToggle(isPaused) {
    pausedHere = isPaused;
    var toggle = document.getElementById('live-toggle');
    if (!toggle) {
      return;
    }
    toggle.hidden = document.querySelector('[data-live]') === null;
    toggle.setAttribute('aria-pressed', isPaused ? 'false' : 'true');
    toggle.textContent = isPaused ? 'Live updates: paused' : 'Live updates: on';
    toggle.classList.toggle('off', isPaused);
  }

  function drawCharts(root) {
    var charts = root.matches && root.matches('[data-chart]') ? [root] : [];
    root.querySelectorAll('[data-chart]').forEach(function (el) {
      charts.push(el);
    });
    charts.forEach(drawChart);
  }

  // The throughput chart: created and finished tasks per minute, from the JSON the server
  // put in data-series ({"t": [unix seconds], "created": [...], "succeeded": [...], ...}).
  function drawChart(el) {
    if (!window.uPlot || el.uplot) {
      return;
    }
    var data;
    try {
      data = JSON.parse(el.getAttribute('data-series') || '{}');
    } catch (e) {
      return;
    }
    if (!data.t || data.t.length === 0) {
      el.textContent = 'No data yet.';
      return;
    }
    var series = [{}];
    var columns = [data.t];
    [
      ['created', 'Created', '#2563eb'],
      ['succeeded', 'Succeeded', '#16a34a'],
      ['failed', 'Failed', '#dc2626'],
      ['cancelled', 'Cancelled', '#a16207']
    ].forEach(function (s) {
      if (data[s[0]]) {
        series.push({ label: s[1], stroke: s[2], width: 2, points: { show: false } });
        columns.push(data[s[0]]);
      }
    });
    var width = Math.max(320, el.clientWidth || 800);
    el.uplot = new window.uPlot(
      {
        width: width,
        height: 220,
        series: series,
        scales: { x: { time: true } },
        axes: [{}, { label: 'tasks / minute', size: 60 }],
        legend: { live: true }
      },
      columns,
      el
    );
  }

  function destroyChart(el) {
    if (el && el.uplot) {
      el.uplot.destroy();
      el.uplot = null;
    }
  }

  // A filter form leaves its empty fields out of the address, so that a shared link says
  // only what it filters on (the server reads an empty field as absent either way).
  function compactForms() {
    document.querySelectorAll('form[data-compact]').forEach(function (form) {
      form.addEventListener('submit', function (event) {
        var params = new URLSearchParams();
        new FormData(form).forEach(function (value, name) {
          if (String(value).trim() !== '') {
            params.append(name, value);
          }
        });
        event.preventDefault();
        var query = params.toString();
        window.location.assign(form.getAttribute('action') + (query ? '?' + query : ''));
      });
    });
  }

  function start() {
    compactForms();
    if (!window.htmx) {
      return;
    }
    var toggle = document.getElementById('live-toggle');
    if (toggle) {
      toggle.addEventListener('click', function () {
        setPaused(!pausedHere);
      });
    }
    showToggle(paused());
    drawCharts(document.body);
    window.htmx.onLoad(drawCharts);
    // A refreshed region replaces the old one: its chart goes with it.
    document.body.addEventListener('htmx:beforeCleanupElement', function (event) {
      destroyChart(event.target);
    });
    window.addEventListener('storage', function (event) {
      if (event.key === PAUSED_KEY) {
        showToggle(paused());
      }
    });
    window.setInterval(refresh, REFRESH_MS);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
