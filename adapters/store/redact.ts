// Store URLs as they may be shown or written anywhere: a password (PostgreSQL's, or any URL's) never leaves the
// process that was given it (not in messages, status, pid files, file or cgroup names).

/**
 * The URL with any password replaced by `***` (`postgres://user:***@host/db`, `?password=***`).
 * A URL without a password is returned unchanged, character for character, so ids derived from
 * it (storeId) stay what they were.
 */
export const redactStoreUrl = (url: string): string => {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return url;
  const schemeEnd = url.indexOf('//') + 2;
  const authorityEnd = url.slice(schemeEnd).search(/[/?#]/);
  const authority = authorityEnd < 0 ? url.slice(schemeEnd) : url.slice(schemeEnd, schemeEnd + authorityEnd);
  const rest = authorityEnd < 0 ? '' : url.slice(schemeEnd + authorityEnd);
  const at = authority.lastIndexOf('@');
  const userinfo = at < 0 ? '' : authority.slice(0, at);
  const colon = userinfo.indexOf(':');
  const safeAuthority = colon < 0 ? authority : `${userinfo.slice(0, colon)}:***${authority.slice(at)}`;
  const safeRest = rest.replace(/([?&]password=)[^&#]*/gi, '$1***');
  return url.slice(0, schemeEnd) + safeAuthority + safeRest;
};
