// Try-it-out for /docs: sends an operation's form to this server with the
// credential of the Authorize panel and shows status, headers and body.
// Written for Tenantry, no dependencies; requests go to this page's origin only.
(function () {
  "use strict";
  var auth = { scheme: "bearer", credential: "", tenant: "" };
  var authForm = document.getElementById("auth-form");
  var authStatus = document.getElementById("auth-status");

  function headersFor(form) {
    var headers = { accept: "application/json" };
    if (form.dataset.public !== "true" && auth.credential) {
      if (auth.scheme === "apikey") headers["x-api-key"] = auth.credential;
      else headers.authorization = "Bearer " + auth.credential;
    }
    if (form.dataset.tenant === "true" && auth.tenant) headers["x-tenant-id"] = auth.tenant;
    return headers;
  }

  function pretty(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
  }

  authForm.addEventListener("submit", function (event) {
    event.preventDefault();
    auth.scheme = authForm.elements.scheme.value;
    auth.credential = authForm.elements.credential.value.trim();
    auth.tenant = authForm.elements.tenant.value.trim();
    if (!auth.credential) {
      authStatus.textContent = "Not authorized: enter a credential.";
      authStatus.className = "status err";
      return;
    }
    authStatus.textContent = "Checking the credential…";
    authStatus.className = "status";
    // WhoAmI tells who the credential stands for (and that it works).
    fetch("/v1/auth/whoami", { headers: headersFor({ dataset: { tenant: "true" } }) })
      .then(function (response) {
        return response.text().then(function (text) {
          var body = {};
          try { body = JSON.parse(text); } catch (e) { /* not JSON */ }
          if (!response.ok) {
            authStatus.textContent = "Not authorized: " + response.status + " " + (body.message || text);
            authStatus.className = "status err";
            return;
          }
          var who = body.principal || {};
          authStatus.textContent = "Authorized as " + (who.kind || "?") + " " + (who.displayName || who.id || "") +
            (body.tenantSlug ? " in tenant " + body.tenantSlug : "") + ".";
          authStatus.className = "status ok";
        });
      })
      .catch(function (error) {
        authStatus.textContent = "Not authorized: " + error;
        authStatus.className = "status err";
      });
  });

  document.getElementById("auth-clear").addEventListener("click", function () {
    auth = { scheme: "bearer", credential: "", tenant: "" };
    authForm.reset();
    authStatus.textContent = "Not authorized: calls are sent without a credential.";
    authStatus.className = "status";
  });

  function send(form) {
    var path = form.dataset.path;
    var query = new URLSearchParams();
    var problems = [];
    Array.prototype.forEach.call(form.querySelectorAll("input[data-in]"), function (input) {
      var value = input.value.trim();
      if (!value) {
        if (input.required) problems.push(input.name + " is required");
        return;
      }
      if (input.dataset.in === "path") {
        path = path.replace("{" + input.name + "}", encodeURIComponent(value));
      } else if (input.dataset.in === "query") {
        var values = input.dataset.array === "true" ? value.split(",") : [value];
        values.forEach(function (v) { if (v.trim()) query.append(input.name, v.trim()); });
      }
    });
    var init = { method: form.dataset.method, headers: headersFor(form) };
    var body = form.elements.body;
    if (body) {
      try { JSON.parse(body.value || "{}"); } catch (e) { problems.push("the body is not JSON: " + e.message); }
      init.body = body.value || "{}";
      init.headers["content-type"] = "application/json";
    }
    var result = form.querySelector(".result");
    var status = result.querySelector(".status");
    var headersOut = result.querySelector(".headers");
    var bodyOut = result.querySelector(".body");
    result.hidden = false;
    if (problems.length) {
      status.textContent = "Not sent: " + problems.join("; ");
      status.className = "status err";
      headersOut.textContent = "";
      bodyOut.textContent = "";
      return;
    }
    if (form.controller) form.controller.abort();
    form.controller = new AbortController();
    init.signal = form.controller.signal;
    var url = path + (query.toString() ? "?" + query.toString() : "");
    var started = performance.now();
    status.textContent = init.method + " " + url + " …";
    status.className = "status";
    headersOut.textContent = "";
    bodyOut.textContent = "";
    fetch(url, init).then(function (response) {
      status.textContent = response.status + " " + response.statusText + " · " + init.method + " " + url + " · " +
        Math.round(performance.now() - started) + " ms";
      status.className = "status " + (response.ok ? "ok" : "err");
      var lines = [];
      response.headers.forEach(function (value, name) { lines.push(name + ": " + value); });
      headersOut.textContent = lines.join("\n");
      if (form.dataset.stream === "true" && response.body) {
        // A server stream: show messages as they arrive (Send again to stop).
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        var read = function () {
          return reader.read().then(function (chunk) {
            if (chunk.done) return;
            bodyOut.textContent += decoder.decode(chunk.value, { stream: true });
            return read();
          });
        };
        return read();
      }
      return response.text().then(function (text) { bodyOut.textContent = pretty(text); });
    }).catch(function (error) {
      if (error.name === "AbortError") return;
      status.textContent = "Failed: " + error;
      status.className = "status err";
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("form.tryit"), function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      send(form);
    });
  });
})();
