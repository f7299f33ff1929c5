// Back office, every page. Flask-Admin's menus, tabs, filters and pager use
// href="javascript:void(0)" links; the Content-Security-Policy refuses to run javascript: URLs
// (and reports each click as a violation), so their navigation is cancelled here, first.
// The links' own handlers (Bootstrap, Flask-Admin) still run: only the default action stops.
document.addEventListener("click", function (event) {
  var link = event.target instanceof Element ? event.target.closest("a[href]") : null;
  if (link && /^\s*javascript:/i.test(link.getAttribute("href"))) {
    event.preventDefault();
  }
}, true);
