// The console's only script besides htmx: send the session's CSRF token (from
// <meta name="csrf-token">) with every htmx request, so partial updates that change state
// pass the same check as forms. No inline script anywhere: the CSP forbids it.
document.addEventListener("htmx:configRequest", function (event) {
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) {
    event.detail.headers["X-CSRF-Token"] = meta.content;
  }
});
