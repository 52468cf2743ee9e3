/* The web chat without page reloads. The page works without this file (plain form posts);
   this only makes it smoother, adds copy buttons, and the double-Escape quick exit. */
(function () {
  "use strict";

  var body = document.body;
  var log = document.getElementById("log");
  var controls = document.getElementById("controls");
  var again = document.getElementById("again");
  var message = document.getElementById("message");
  var hint = document.getElementById("message-hint");
  var reduceMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
  var busy = false;
  var lastEscape = 0;
  var ESCAPE_WINDOW_MS = 1500;

  // ---------------------------------------------------------------- quick exit
  function quickExit() {
    try {
      navigator.sendBeacon("/exit", new URLSearchParams({ csrf: body.dataset.csrf || "" }));
    } catch (error) {
      /* leaving now matters more than telling the server */
    }
    // replace(): the Back button does not lead back to this page.
    window.location.replace(body.dataset.exitUrl);
  }

  document.getElementById("quick-exit").addEventListener("click", function (event) {
    event.preventDefault();
    quickExit();
  });

  window.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" && event.key !== "Esc") {
      return;
    }
    var now = Date.now();
    if (now - lastEscape <= ESCAPE_WINDOW_MS) {
      quickExit();
    }
    lastEscape = now;
  }, true);

  // A deep link (/?start=les) should not start again on reload.
  if (window.location.search) {
    window.history.replaceState(null, "", window.location.pathname);
  }

  // ---------------------------------------------------------------- sending
  function setDisabled(form, disabled) {
    form.querySelectorAll("button, textarea").forEach(function (element) {
      element.disabled = disabled;
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute("data-chat")) {
      return; // the letter download and the quick exit are ordinary posts
    }
    event.preventDefault();
    if (busy) {
      return;
    }
    var data = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      data.append(name, value);
    });
    var submitter = event.submitter;
    if (submitter && submitter.name) {
      data.append(submitter.name, submitter.value);
    }
    send(data, form);
  });

  function send(data, form) {
    busy = true;
    log.setAttribute("aria-busy", "true");
    setDisabled(form, true);
    fetch("/send", {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "X-Hulpwijzer": "fetch" }
    })
      .then(function (response) { return response.json(); })
      .then(function (result) { show(result, form); })
      .catch(function () {
        setDisabled(form, false);
        showNotice(body.dataset.offline);
      })
      .then(function () {
        busy = false;
        log.removeAttribute("aria-busy");
      });
  }

  function show(result, form) {
    var typed = form.id === "composer";
    if (result.error) {
      setDisabled(form, false);
    } else {
      // The options of earlier turns no longer apply; the echo shows what was chosen.
      log.querySelectorAll(".options").forEach(function (options) { options.remove(); });
      if (typed) {
        message.value = "";
        setDisabled(form, false);
      } else if (!form.classList.contains("options")) {
        setDisabled(form, false);
      }
    }
    var previous = document.getElementById("current");
    if (previous) {
      previous.removeAttribute("id");
    }
    log.insertAdjacentHTML("beforeend", result.html);
    var turn = log.lastElementChild;
    turn.classList.add("arrived");
    enhance(turn);
    if (result.ui) {
      applyLanguage(result.lang, result.ui);
    }
    if (result.ended) {
      controls.hidden = true;
      again.hidden = false;
      body.dataset.csrf = "";
    }
    turn.scrollIntoView({ block: "start", behavior: reduceMotion.matches ? "auto" : "smooth" });
    var next = result.ended ? again.querySelector("a") : (
      typed ? message : (turn.querySelector(".options button") || message)
    );
    if (next) {
      next.focus({ preventScroll: true });
    }
  }

  function showNotice(text) {
    var box = document.createElement("div");
    box.className = "msg notice";
    box.setAttribute("role", "alert");
    var paragraph = document.createElement("p");
    paragraph.textContent = text;
    box.appendChild(paragraph);
    log.appendChild(box);
  }

  // Enter sends, Shift+Enter makes a new line (not while an input method is composing).
  message.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      document.getElementById("composer").requestSubmit();
    }
  });
  hint.hidden = false;
  message.setAttribute("aria-describedby", "message-hint");

  // ---------------------------------------------------------------- language
  function applyLanguage(lang, ui) {
    document.documentElement.lang = lang;
    document.title = ui.title;
    document.querySelectorAll("[data-ui]").forEach(function (element) {
      var text = ui[element.dataset.ui];
      if (text !== undefined) {
        element.textContent = text;
      }
    });
    document.querySelectorAll("[data-ui-label]").forEach(function (element) {
      var text = ui[element.dataset.uiLabel];
      if (text !== undefined) {
        element.setAttribute("aria-label", text);
      }
    });
    document.querySelectorAll("[data-ui-html]").forEach(function (element) {
      var text = ui[element.dataset.uiHtml];
      if (text === undefined) {
        return;
      }
      element.textContent = "";
      text.split("\n\n").forEach(function (block) {
        var paragraph = document.createElement("p");
        paragraph.textContent = block;
        element.appendChild(paragraph);
      });
    });
    body.dataset.offline = ui.error_offline;
    body.dataset.copied = ui.copied;
    body.dataset.copyFailed = ui.copy_failed;
  }

  // ---------------------------------------------------------------- letters
  function enhance(root) {
    root.querySelectorAll("button.copy").forEach(function (button) {
      button.hidden = false;
    });
  }

  function copyBySelection(area) {
    area.focus();
    area.select();
    try {
      return document.execCommand("copy");
    } catch (error) {
      return false;
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy");
    if (!button) {
      return;
    }
    var area = document.getElementById(button.dataset.copy);
    var status = button.parentNode.querySelector(".copy-status");
    function done(copied) {
      status.textContent = copied ? body.dataset.copied : body.dataset.copyFailed;
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(area.value).then(
        function () { done(true); },
        function () { done(copyBySelection(area)); }
      );
    } else {
      done(copyBySelection(area));
    }
  });

  enhance(document);
})();
